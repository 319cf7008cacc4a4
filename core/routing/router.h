// The part of a hyper-connection that differs between residual kinds: how the per-token
// matrices H_pre (n), H_post (n) and H_res (n x n) are made from x~ = RMSNorm(vec S) (SPEC §4.1).
// Each kind lives in its own file; HyperConnection (../hyper_connection.h) holds the rest.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <memory>
#include <utility>
#include <vector>

#include "../config.h"
#include "../fused_hyper_connection.h"
#include "../gumbel_noise.h"
#include "dynamic_projection.h"

namespace shc {

struct Routing {
  torch::Tensor pre;          // (..., n)     H_pre: how much each stream feeds the sublayer
  torch::Tensor post;         // (..., n)     H_post: how much of the sublayer output each receives
  torch::Tensor res;          // (..., n, n)  H_res: stream mixing
  torch::Tensor mix_weights;  // (..., K)     alpha of the Cayley mixture (shc only)
  torch::Tensor stream_mask;  // (..., n)     prefix mask from the rank selector (when enabled)
  // history only (history_router.h, history_detach): streams 1.. (the older window entries) enter
  // the write without gradient, so the gradient reaches only the latest state.
  bool detach_history = false;
  // Fused CPU path: read and write leave their state gradients to the projection that made this
  // routing, which sums dS in one pass (StateGradientLink). Null on the composed path.
  StateGradient state_gradient;
};

class RouterImpl : public torch::nn::Module {
 public:
  // Every kind projects x~ through a few per-token linear maps; their weights stacked into one
  // (m, n*d) matrix, so that the projections are one GEMM over tokens (or one fused pass,
  // fused_hyper_connection.h) ...
  virtual torch::Tensor projection_weight() = 0;
  // ... and the routing built from the projected raw = x~ W^T (..., m).
  virtual Routing route_projected(const torch::Tensor& raw) = 0;

  // The H_res path alone, split in two so the routing benchmark times exactly the model's code:
  // the per-token coefficient projection x~ W_res^T ...
  virtual torch::Tensor residual_coefficients(const torch::Tensor& x_tilde) = 0;
  // ... and the construction of H_res (..., n, n) from those coefficients.
  virtual torch::Tensor residual_from_coefficients(const torch::Tensor& coefficients) = 0;

  // Keys the Gumbel noise of a kind that draws any (history's mixing; gumbel_noise.h) for the
  // next forwards; nullptr goes back to the default generator. The others draw none.
  virtual void set_noise_key(const GumbelNoiseKey* /*key*/) {}

  // The fused CPU kernels or the composed reference ops, for the hyper-connection's passes over
  // the state and for a kind's own construction where it has a kernel (mHC's Sinkhorn); set by
  // HyperConnection::set_fused.
  void set_ops(StreamOps ops) { ops_ = ops; }
  StreamOps ops() const { return ops_; }

 private:
  StreamOps ops_ = StreamOps::kFused;
};

// The kinds whose coefficients are per-token projections of x~ (hc, mhc, shc): each lists its
// projections once, and they are stacked and split in that order.
class ProjectionRouterImpl : public RouterImpl {
 public:
  torch::Tensor projection_weight() override { return stacked_weight(projections_); }

 protected:
  void set_projections(std::vector<DynamicProjection> projections) {
    projections_ = std::move(projections);
  }
  // Each projection's raw part of `projected` = x~ W^T.
  std::vector<torch::Tensor> split(const torch::Tensor& projected) const {
    return split_projected(projected, projections_);
  }

 private:
  std::vector<DynamicProjection> projections_;
};

// The router for cfg.residual at sublayer depth `depth` (0-based over all sublayers); nullptr for
// the plain residual, which has nothing to route.
std::shared_ptr<RouterImpl> make_router(const ModelConfig& cfg, int64_t depth);

// Static H_pre pattern of the HC paper: the sublayer at depth l reads mainly stream l mod n.
torch::Tensor depth_one_hot(int64_t n, int64_t depth);
// The same pattern as bias logits of a sigmoid gate: sigmoid(+3) = 0.95 for stream l mod n,
// sigmoid(-3) = 0.05 for the others.
torch::Tensor depth_read_logits(int64_t n, int64_t depth);

}  // namespace shc
