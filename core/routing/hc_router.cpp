#include "hc_router.h"

#include <torch/torch.h>

namespace shc {

HCRouterImpl::HCRouterImpl(const ModelConfig& cfg, int64_t depth) : n_(cfg.n_streams) {
  const int64_t in = n_ * cfg.hidden_dim;
  const double s = cfg.routing_init_scale;
  const auto tanh = ProjectionActivation::kTanh;
  res = register_module("res", DynamicProjection(in, n_ * n_, s, tanh, torch::eye(n_)));
  pre = register_module("pre", DynamicProjection(in, n_, s, tanh, depth_one_hot(n_, depth)));
  post = register_module("post", DynamicProjection(in, n_, s, tanh, torch::ones({n_})));
  set_projections({res, pre, post});
}

torch::Tensor HCRouterImpl::residual_coefficients(const torch::Tensor& x_tilde) {
  return torch::matmul(x_tilde, res->weight.t());
}

torch::Tensor HCRouterImpl::residual_from_coefficients(const torch::Tensor& coefficients) {
  auto shape = coefficients.sizes().vec();
  shape.back() = n_;
  shape.push_back(n_);
  return res->finish(coefficients).view(shape);
}

Routing HCRouterImpl::route_projected(const torch::Tensor& projected) {
  auto raw = split(projected);
  Routing r;
  r.res = residual_from_coefficients(raw[0]);
  r.pre = pre->finish(raw[1]);
  r.post = post->finish(raw[2]);
  return r;
}

}  // namespace shc
