// SHCBlock: a pre-norm transformer block whose attention and SwiGLU sublayers are each wrapped by
// a hyper-connection (SHC Algorithm 1, with the routing made per token so the block is causal).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "adaptive_rank.h"
#include "attention.h"
#include "config.h"
#include "feed_forward.h"
#include "hyper_connection.h"
#include "rms_norm.h"
#include "stage_marks.h"

namespace shc {

enum class Sublayer { kAttention = 0, kFeedForward = 1 };

// Receives the routing of every sublayer as the model runs (RoutingAnalyzer implements it).
class RoutingObserver {
 public:
  virtual ~RoutingObserver() = default;
  // `n_eff` (...) is undefined unless adaptive rank is on.
  virtual void observe(int64_t layer, Sublayer sublayer, const Routing& routing,
                       const torch::Tensor& n_eff) = 0;
};

class SHCBlockImpl : public torch::nn::Module {
 public:
  SHCBlockImpl(const ModelConfig& cfg, int64_t layer);
  // streams (batch, T, n, d) -> (batch, T, n, d). With stream compression the block receives the
  // coordinates C (batch, T, r, d) in basis U and, given `out_basis`, returns U^T S' (r x d).
  torch::Tensor forward(const StreamState& streams, LayerKVCache* cache = nullptr,
                        const torch::Tensor& out_basis = {});
  // Fused CPU kernels in both hyper-connections (default) or the composed reference ops.
  void set_fused_routing(bool fused);

  void set_observer(RoutingObserver* observer) { observer_ = observer; }
  // Stage boundaries (routing / attention / FFN) for a profiler; nullptr = none (no cost).
  void set_stage_observer(StageObserver* observer) { stage_observer_ = observer; }
  int64_t layer() const { return layer_; }

  HyperConnection attn_hc{nullptr}, ffn_hc{nullptr};
  RMSNorm attn_norm{nullptr}, ffn_norm{nullptr};
  MultiHeadAttention attn{nullptr};
  FeedForward ffn{nullptr};
  AdaptiveRankSelector rank_selector{nullptr};  // only with cfg.adaptive_rank

 private:
  int64_t layer_;
  double eps_;
  RoutingObserver* observer_ = nullptr;
  StageObserver* stage_observer_ = nullptr;
};
TORCH_MODULE(SHCBlock);

}  // namespace shc
