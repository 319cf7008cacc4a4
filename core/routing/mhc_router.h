// Manifold-constrained hyper-connections (DeepSeek, "mHC", 2025):
//   H_res  = SinkhornKnopp(exp(L(x~)))   doubly stochastic, so ||H_res||_2 <= 1
//   H_pre  = sigmoid(.),  H_post = 2 sigmoid(.)
// The Sinkhorn iterations are unrolled under autograd (exact gradients), in fp32.
#pragma once

#include "dynamic_projection.h"
#include "router.h"

namespace shc {

// Sinkhorn-Knopp on exp(logits) (..., n, n): `iters` rounds of row then column normalisation,
// carried out in the log domain (log-sum-exp per row and column), so that logits spread over
// hundreds still give a doubly stochastic matrix instead of underflowed rows or columns. Runs in
// fp32 (fp64 when given fp64, for gradient checks).
torch::Tensor sinkhorn_knopp(const torch::Tensor& logits, int64_t iters);

class MHCRouterImpl : public ProjectionRouterImpl {
 public:
  MHCRouterImpl(const ModelConfig& cfg, int64_t depth);
  Routing route_projected(const torch::Tensor& projected) override;
  torch::Tensor residual_coefficients(const torch::Tensor& x_tilde) override;
  torch::Tensor residual_from_coefficients(const torch::Tensor& coefficients) override;

  DynamicProjection res{nullptr}, pre{nullptr}, post{nullptr};

 private:
  int64_t n_, iters_;
};

}  // namespace shc
