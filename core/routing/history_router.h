// History-window mixing (the `history` residual kind, SPEC §4.3; seed 004): each sublayer mixes a
// sliding window of the last H states with weights on the probability simplex,
//   x_{l+1} = f(x_l) + sum_{k < H} a_k x_{l-k},   a = P_simplex(w)
// with P_simplex the exact sort-based Euclidean projection (simplex_projection.h), not a softmax.
// The window is the hyper-connection state itself, a shift register of H "streams" (stream 0 the
// latest state), so the skeleton of hyper_connection.h runs it unchanged:
//   H_pre = e_0 (the sublayer reads the latest state), H_post = e_0 (its output goes to the new
//   latest state), H_res = [a in row 0; row i >= 1 is e_{i-1}] (the window shifts by one; the
//   oldest state drops out).
// The window starts as H copies of the embedding (SHCTransformer's S0, or HyperConnections'
// expand), so before H layers have run the missing entries are the embedding.
// w is one learned H-vector per sublayer. It starts inside the simplex, at a = 0.9 on the latest
// state and 0.1 / (H - 1) on each older one: close to the plain residual, with every path alive.
// (A start at the vertex e_0, the plain residual itself, can stay there for good: if the first
// gradients favour the latest state, w moves into the vertex's normal cone, where the projection
// has zero gradient; it did so in every sublayer of a test model.) An entry the projection sets to
// exactly 0 gets no gradient while it is there (it returns only if the threshold falls below it).
// With H = 1 the weight is 1: the plain residual. Options:
// - identity floor a_0 >= history_floor (the exact projection onto the floored simplex);
// - Gumbel mixing in training (history_tau > 0): per token, a' = softmax((log a + g) / tau) with
//   Gumbel noise g over the support of a (pruned entries stay 0), then the floor again;
//   evaluation uses a itself;
// - detached history (history_detach): the gradient reaches only the latest state, not the older
//   window entries (Routing::detach_history, honoured by HyperConnection::write).
// The weights do not depend on the token, so the routing costs no projection of x~; per-token
// matrices exist only as broadcast views (or with Gumbel noise).
#pragma once

#include "../gumbel_noise.h"
#include "router.h"

namespace shc {

class HistoryRouterImpl : public RouterImpl {
 public:
  HistoryRouterImpl(const ModelConfig& cfg, int64_t depth);
  // No projection of x~: the weights are per sublayer, not per token (an empty (0, n*d) weight).
  torch::Tensor projection_weight() override;
  // `projected` (..., 0) gives only the token shape.
  Routing route_projected(const torch::Tensor& projected) override;
  // The window logits w, broadcast to the tokens of x~: (..., H).
  torch::Tensor residual_coefficients(const torch::Tensor& x_tilde) override;
  // H_res (..., H, H) from per-token window logits: row 0 = the (floored, noised) projection.
  torch::Tensor residual_from_coefficients(const torch::Tensor& coefficients) override;

  // The mixing weights a = P(w) (with the floor), shape (H): what evaluation uses.
  torch::Tensor window_weights() const;

  // Training draws the Gumbel noise from `key` (gumbel_noise.h; the state must then be
  // (batch, T, ...) with one key row per batch row); null: from the default generator. `key` must
  // outlive its use.
  void set_noise_key(const GumbelNoiseKey* key) override { noise_key_ = key; }

  torch::Tensor window_logits;  // (H) w, starts at the initial weights (on the simplex)

 private:
  // Row 0 of H_res for per-token weights a (..., H); the shift below it.
  torch::Tensor window_matrix(const torch::Tensor& a) const;
  // `tokens` (batch, T, .) gives the token shape of the noise.
  torch::Tensor gumbel_mix(const torch::Tensor& a, const torch::Tensor& tokens) const;

  int64_t h_, depth_, features_;
  double floor_, tau_;
  bool detach_;
  const GumbelNoiseKey* noise_key_ = nullptr;
};

// Keyed Gumbel noise of the history routers uses layer ids from here on (depth + this), apart
// from the rank selectors' (block index).
constexpr int64_t kHistoryNoiseLayerOffset = int64_t(1) << 20;

}  // namespace shc
