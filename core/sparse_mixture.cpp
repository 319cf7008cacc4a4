#include "sparse_mixture.h"

#include <torch/torch.h>

#include "precision.h"

namespace shc {

torch::Tensor sparse_softmax(const torch::Tensor& logits, int64_t top_k) {
  if (top_k >= logits.size(-1)) return torch::softmax(logits, -1);
  auto kept = std::get<1>(logits.topk(top_k, -1));
  auto masked = torch::full_like(logits, -std::numeric_limits<float>::infinity())
                    .scatter(-1, kept, logits.gather(-1, kept));
  return torch::softmax(masked, -1);
}

torch::Tensor mix_bases(const torch::Tensor& alpha, const torch::Tensor& bases) {
  const auto n = bases.size(-1);
  auto shape = alpha.sizes().vec();
  shape.back() = n;
  shape.push_back(n);
  return torch::matmul(alpha, bases.reshape({bases.size(0), n * n}).to(alpha.scalar_type()))
      .view(shape);
}

SparseOrthogonalMixtureImpl::SparseOrthogonalMixtureImpl(int64_t n, int64_t k, int64_t hidden_dim,
                                                         int64_t top_k, double init_scale)
    : top_k_(top_k) {
  TORCH_CHECK(top_k >= 1 && top_k <= k, "SparseOrthogonalMixture: top_k (", top_k,
              ") must be between 1 and k (", k, ")");
  bases = register_module("bases", CayleyTransform(n, k, init_scale));
  logits = register_module("logits", DynamicProjection(hidden_dim, k, init_scale));
}

torch::Tensor SparseOrthogonalMixtureImpl::mixture_weights(const torch::Tensor& x) {
  return sparse_softmax(logits(at_least_fp32(x)), top_k_);
}

torch::Tensor SparseOrthogonalMixtureImpl::mix_logits(const torch::Tensor& l) {
  return mix_bases(sparse_softmax(l, top_k_), bases());
}

torch::Tensor SparseOrthogonalMixtureImpl::forward(const torch::Tensor& x) {
  return mix_logits(logits(at_least_fp32(x)));
}

torch::Tensor SparseOrthogonalMixtureImpl::get_spectral_norm(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return torch::linalg_matrix_norm(forward(x), 2);
}

}  // namespace shc
