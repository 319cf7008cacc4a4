// Dynamic hyper-connections (Zhu et al. 2024, "Hyper-Connections", DHC):
//   H_res  = A_r + s_r * tanh(x~ W_r)   with A_r initialised to I
//   H_pre  = A_m + s_m * tanh(x~ W_m)   with A_m initialised to e_(l mod n)
//   H_post = B   + s_b * tanh(x~ W_b)   with B initialised to 1
// No constraint keeps ||H_res|| bounded: this is the unconstrained baseline.
#pragma once

#include "dynamic_projection.h"
#include "router.h"

namespace shc {

class HCRouterImpl : public ProjectionRouterImpl {
 public:
  HCRouterImpl(const ModelConfig& cfg, int64_t depth);
  Routing route_projected(const torch::Tensor& projected) override;
  torch::Tensor residual_coefficients(const torch::Tensor& x_tilde) override;
  torch::Tensor residual_from_coefficients(const torch::Tensor& coefficients) override;

  DynamicProjection res{nullptr}, pre{nullptr}, post{nullptr};

 private:
  int64_t n_;
};

}  // namespace shc
