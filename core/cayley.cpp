#include "cayley.h"

#include <torch/torch.h>

#include "precision.h"

namespace shc {

torch::Tensor cayley(const torch::Tensor& skew) {
  const auto n = skew.size(-1);
  auto eye = torch::eye(n, skew.options()).expand_as(skew);
  // I + A is never singular for skew-symmetric A (its eigenvalues are 1 + i*lambda), so the
  // error check of linalg_solve, a host sync on GPUs, is skipped.
  return std::get<0>(torch::linalg_solve_ex(eye + skew, eye - skew));
}

CayleyTransformImpl::CayleyTransformImpl(int64_t n, int64_t k, double init_scale) : n_(n), k_(k) {
  TORCH_CHECK(n >= 1 && k >= 1, "CayleyTransform needs n >= 1 and k >= 1, got n=", n, " k=", k);
  auto rows_cols = torch::triu_indices(n, n, /*offset=*/1);
  upper_index_ = register_buffer("upper_index", rows_cols[0] * n + rows_cols[1]);
  upper = register_parameter("upper", torch::randn({k, n * (n - 1) / 2}) * init_scale);
}

void CayleyTransformImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  // detach(): a handle of its own, so Module::to's in-place set_data on the buffer leaves it.
  auto index = upper_index_.detach().to(device, non_blocking);
  torch::nn::Module::to(device, dtype, non_blocking);
  upper_index_.set_data(index);
}

void CayleyTransformImpl::to(torch::Dtype dtype, bool non_blocking) {
  auto index = upper_index_.detach();
  torch::nn::Module::to(dtype, non_blocking);
  upper_index_.set_data(index);
}

torch::Tensor CayleyTransformImpl::skew() const {
  // Normally a no-op: to(device) moved the buffer with the module. A host-to-device copy waits
  // for the GPU, so when the parameters were placed without the module (FSDP), the buffer itself
  // is moved, once.
  if (upper_index_.device() != upper.device()) {
    upper_index_.set_data(upper_index_.to(upper.device()));
  }
  auto flat = torch::zeros({k_, n_ * n_}, upper.options());
  auto p = flat.index_copy(1, upper_index_, upper).view({k_, n_, n_});
  return p - p.transpose(1, 2);
}

torch::Tensor CayleyTransformImpl::forward() {
  // The solve runs in fp32 even under bf16 autocast: orthogonality is the whole point.
  return cayley(at_least_fp32(skew()));
}

}  // namespace shc
