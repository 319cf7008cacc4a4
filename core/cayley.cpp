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
  upper_index_ = rows_cols[0] * n + rows_cols[1];
  upper = register_parameter("upper", torch::randn({k, n * (n - 1) / 2}) * init_scale);
}

torch::Tensor CayleyTransformImpl::skew() const {
  // Moved once, not per call: a host-to-device copy waits for the GPU.
  if (upper_index_.device() != upper.device()) upper_index_ = upper_index_.to(upper.device());
  auto flat = torch::zeros({k_, n_ * n_}, upper.options());
  auto p = flat.index_copy(1, upper_index_, upper).view({k_, n_, n_});
  return p - p.transpose(1, 2);
}

torch::Tensor CayleyTransformImpl::forward() {
  // The solve runs in fp32 even under bf16 autocast: orthogonality is the whole point.
  return cayley(at_least_fp32(skew()));
}

}  // namespace shc
