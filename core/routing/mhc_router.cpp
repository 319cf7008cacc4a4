#include "mhc_router.h"

#include <torch/torch.h>

#include "../precision.h"

namespace shc {

namespace {

// Off-diagonal logit of the initial H_res: exp(-8) ~ 3e-4, so Sinkhorn starts at ~identity.
constexpr double kOffDiagonalLogit = -8.0;

}  // namespace

MHCRouterImpl::MHCRouterImpl(const ModelConfig& cfg, int64_t depth)
    : n_(cfg.n_streams), iters_(cfg.sinkhorn_iters) {
  const int64_t in = n_ * cfg.hidden_dim;
  const double s = cfg.routing_init_scale;
  const auto id = ProjectionActivation::kIdentity;
  auto res_bias = (1 - torch::eye(n_)) * kOffDiagonalLogit;
  res = register_module("res", DynamicProjection(in, n_ * n_, s, id, res_bias));
  pre = register_module("pre", DynamicProjection(in, n_, s, id, depth_read_logits(n_, depth)));
  post = register_module("post", DynamicProjection(in, n_, s, id));
  set_projections({res, pre, post});
}

torch::Tensor MHCRouterImpl::residual_coefficients(const torch::Tensor& x_tilde) {
  return torch::matmul(x_tilde, res->weight.t());
}

torch::Tensor MHCRouterImpl::residual_from_coefficients(const torch::Tensor& coefficients) {
  auto shape = coefficients.sizes().vec();
  shape.back() = n_;
  shape.push_back(n_);
  return sinkhorn_knopp(res->finish(coefficients).view(shape), iters_, ops());
}

Routing MHCRouterImpl::route_projected(const torch::Tensor& projected) {
  auto raw = split(projected);
  Routing r;
  r.res = residual_from_coefficients(raw[0]);
  r.pre = torch::sigmoid(pre->finish(raw[1]));
  r.post = 2 * torch::sigmoid(post->finish(raw[2]));
  return r;
}

}  // namespace shc
