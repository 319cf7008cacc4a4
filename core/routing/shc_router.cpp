#include "shc_router.h"

#include <torch/torch.h>

namespace shc {

SHCRouterImpl::SHCRouterImpl(const ModelConfig& cfg, int64_t depth) {
  const int64_t n = cfg.n_streams, in = n * cfg.hidden_dim;
  const double s = cfg.routing_init_scale;
  const auto id = ProjectionActivation::kIdentity;
  mixture = register_module("mixture", SparseOrthogonalMixture(n, cfg.k_mixture, in, cfg.top_k, s));
  pre = register_module("pre", DynamicProjection(in, n, s, id, depth_read_logits(n, depth)));
  post = register_module("post", DynamicProjection(in, n, s, id));
  set_projections({mixture->logits, pre, post});
}

torch::Tensor SHCRouterImpl::residual_coefficients(const torch::Tensor& x_tilde) {
  return torch::matmul(x_tilde, mixture->logits->weight.t());
}

torch::Tensor SHCRouterImpl::residual_from_coefficients(const torch::Tensor& coefficients) {
  return mixture->mix_logits(mixture->logits->finish(coefficients), ops());
}

Routing SHCRouterImpl::route_projected(const torch::Tensor& projected) {
  auto raw = split(projected);
  Routing r;
  auto mixing =
      sparse_mix(mixture->logits->finish(raw[0]), mixture->top_k(), mixture->bases(), ops());
  r.mix_weights = mixing.alpha;
  r.res = mixing.res;
  r.pre = torch::sigmoid(pre->finish(raw[1]));
  r.post = 2 * torch::sigmoid(post->finish(raw[2]));
  return r;
}

}  // namespace shc
