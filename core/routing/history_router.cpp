#include "history_router.h"

#include <torch/torch.h>

#include "../simplex_projection.h"

namespace shc {

namespace {
// Initial weight of all older window entries together (history_router.h).
constexpr double kOlderInit = 0.1;
}  // namespace

HistoryRouterImpl::HistoryRouterImpl(const ModelConfig& cfg, int64_t depth)
    : h_(cfg.n_streams),
      depth_(depth),
      features_(cfg.n_streams * cfg.hidden_dim),
      floor_(cfg.history_floor),
      tau_(cfg.history_tau),
      detach_(cfg.history_detach) {
  TORCH_CHECK(h_ >= 1, "history: the window (n_streams = ", h_, ") must be at least 1");
  TORCH_CHECK(floor_ >= 0 && floor_ < 1, "history: history_floor (", floor_, ") must be in [0, 1)");
  TORCH_CHECK(tau_ >= 0, "history: history_tau (", tau_, ") must be >= 0 (0 = no Gumbel mixing)");
  auto w = torch::full({h_}, h_ > 1 ? kOlderInit / double(h_ - 1) : 0.0);
  w[0] = h_ > 1 ? 1.0 - kOlderInit : 1.0;
  window_logits = register_parameter("window_logits", w);
}

torch::Tensor HistoryRouterImpl::window_weights() const {
  return project_to_simplex(window_logits, 0, floor_);
}

torch::Tensor HistoryRouterImpl::window_matrix(const torch::Tensor& a) const {
  // Row i >= 1 copies state i - 1 (the shift); row 0 is a.
  auto shift = torch::diag(torch::ones({h_ - 1}, a.options()), -1);
  return shift + depth_one_hot(h_, 0).to(a.options()).unsqueeze(-1) * a.unsqueeze(-2);
}

torch::Tensor HistoryRouterImpl::gumbel_mix(const torch::Tensor& a,
                                            const torch::Tensor& tokens) const {
  auto lead = tokens.sizes().vec();
  lead.back() = h_;
  auto u =
      gumbel_uniform(noise_key_, depth_ + kHistoryNoiseLayerOffset, lead, a.options(), "history");
  auto g = -torch::log(-torch::log(u));
  // Entries the projection pruned (a = 0) stay exactly 0; the clamp keeps log finite there so
  // that the backward never multiplies 0 by infinity.
  auto logits = (torch::log(a.clamp_min(1e-30)) + g) / tau_;
  auto mixed = torch::softmax(logits.masked_fill(a.detach() <= 0, -INFINITY), -1);
  if (floor_ == 0) return mixed;
  // Tokens whose noise took the latest weight below the floor are projected back; the others
  // keep their weights exactly (a projection would add round-off to the pruned zeros).
  auto below = mixed.select(-1, 0).unsqueeze(-1) < floor_;
  return torch::where(below, project_to_simplex(mixed, 0, floor_), mixed);
}

torch::Tensor HistoryRouterImpl::residual_coefficients(const torch::Tensor& x_tilde) {
  auto lead = x_tilde.sizes().vec();
  lead.back() = h_;
  return window_logits.expand(lead);
}

torch::Tensor HistoryRouterImpl::residual_from_coefficients(const torch::Tensor& coefficients) {
  return window_matrix(project_to_simplex(coefficients, 0, floor_));
}

torch::Tensor HistoryRouterImpl::projection_weight() {
  return torch::zeros({0, features_}, window_logits.options());
}

Routing HistoryRouterImpl::route_projected(const torch::Tensor& projected) {
  auto lead = projected.sizes().vec();
  lead.pop_back();
  auto per_token = [&](torch::Tensor t, std::vector<int64_t> tail) {
    auto shape = lead;
    shape.insert(shape.end(), tail.begin(), tail.end());
    return t.expand(shape);
  };
  // One projection per sublayer and forward (not per token): w is shared by every token.
  auto a = window_weights();
  if (is_training() && tau_ > 0 && h_ > 1) a = gumbel_mix(a, projected);
  auto e0 = depth_one_hot(h_, 0).to(a.options());
  Routing r;
  r.res = a.dim() == 1 ? per_token(window_matrix(a), {h_, h_}) : window_matrix(a);
  r.pre = per_token(e0, {h_});
  r.post = per_token(e0, {h_});
  r.detach_history = detach_;
  return r;
}

}  // namespace shc
