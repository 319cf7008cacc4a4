// Sparse orthogonal mixture (SHC Eq. 7, Prop. 1): H_res(x) = sum_{i in top-k} alpha_i(x) Q_i with
// Q_i = Cayley(A_i). Every Q_i has spectral norm 1 and alpha is a convex combination, so
// rho(H_res) <= ||H_res||_2 <= sum_i alpha_i ||Q_i||_2 = 1 for every token, whatever the input.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "cayley.h"
#include "fused_hyper_connection.h"
#include "routing/dynamic_projection.h"

namespace shc {

// Softmax over the last dimension keeping only the top_k largest logits per row (the others get
// weight exactly 0); equal to the renormalised top-k of the full softmax. top_k >= K is dense.
torch::Tensor sparse_softmax(const torch::Tensor& logits, int64_t top_k);

// sum_i alpha_i Q_i: alpha (..., K), bases (K, n, n) -> (..., n, n).
torch::Tensor mix_bases(const torch::Tensor& alpha, const torch::Tensor& bases);

// alpha = sparse_softmax(logits, top_k) and res = mix_bases(alpha, bases). `ops`: one autograd
// function over a per-token CPU kernel (float/double; the composed ops elsewhere), whose backward
// saves only alpha, or the composed reference. Among equal logits at the top_k boundary the kernel
// keeps the lower index (torch::topk leaves that order unspecified).
struct SparseMixing {
  torch::Tensor alpha, res;
};
SparseMixing sparse_mix(const torch::Tensor& logits, int64_t top_k, const torch::Tensor& bases,
                        StreamOps ops);

class SparseOrthogonalMixtureImpl : public torch::nn::Module {
 public:
  // n streams, k bases, mixing logits projected from `hidden_dim` features per token.
  SparseOrthogonalMixtureImpl(int64_t n, int64_t k, int64_t hidden_dim, int64_t top_k,
                              double init_scale = 0.01);
  // x (..., hidden_dim) -> H_res (..., n, n)
  torch::Tensor forward(const torch::Tensor& x);
  // alpha (..., K): exactly top_k non-zeros per token, summing to 1.
  torch::Tensor mixture_weights(const torch::Tensor& x);
  // H_res from given mixing logits (..., K); the bases are built once per call, not per token.
  torch::Tensor mix_logits(const torch::Tensor& logits, StreamOps ops = StreamOps::kFused);
  // Per-token ||H_res||_2 (largest singular value), shape (...).
  torch::Tensor get_spectral_norm(const torch::Tensor& x);

  int64_t top_k() const { return top_k_; }

  CayleyTransform bases{nullptr};
  DynamicProjection logits{nullptr};  // (hidden_dim -> K), zero at init: alpha starts uniform

 private:
  int64_t top_k_;
};
TORCH_MODULE(SparseOrthogonalMixture);

}  // namespace shc
