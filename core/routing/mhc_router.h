// Manifold-constrained hyper-connections (DeepSeek, "mHC", 2025):
//   H_res  = SinkhornKnopp(exp(L(x~)))   doubly stochastic, so ||H_res||_2 <= 1
//   H_pre  = sigmoid(.),  H_post = 2 sigmoid(.)
// The Sinkhorn iterations run in the log domain in fp32 with exact gradients (sinkhorn.h).
#pragma once

#include "dynamic_projection.h"
#include "router.h"
#include "sinkhorn.h"

namespace shc {

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
