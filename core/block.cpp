#include "block.h"

#include <torch/torch.h>

namespace shc {

SHCBlockImpl::SHCBlockImpl(const ModelConfig& cfg, int64_t layer)
    : layer_(layer), eps_(cfg.norm_eps) {
  attn_hc = register_module("attn_hc", HyperConnection(cfg, 2 * layer));
  ffn_hc = register_module("ffn_hc", HyperConnection(cfg, 2 * layer + 1));
  attn_norm = register_module("attn_norm", RMSNorm(cfg.hidden_dim, cfg.norm_eps));
  ffn_norm = register_module("ffn_norm", RMSNorm(cfg.hidden_dim, cfg.norm_eps));
  attn = register_module("attn", MultiHeadAttention(cfg));
  ffn = register_module("ffn", FeedForward(cfg.hidden_dim, cfg.ffn_dim));
  if (cfg.adaptive_rank) {
    rank_selector = register_module(
        "rank_selector",
        AdaptiveRankSelector(cfg.n_streams, cfg.n_streams * cfg.hidden_dim, cfg.rank_hidden));
  }
}

torch::Tensor SHCBlockImpl::forward(const StreamState& streams, LayerKVCache* cache,
                                    const torch::Tensor& out_basis) {
  using S = BlockStage;
  auto mark = [&](const torch::Tensor& t, S from, S to) {
    return stage_boundary(t, stage_observer_, layer_, from, to);
  };
  const StreamState in{mark(streams.coords, S::kOutside, S::kRouting), streams.basis};
  torch::Tensor mask, n_eff;
  if (rank_selector) {
    // One n_eff per token and block, chosen from the block's input state (shared by both
    // sublayers).
    auto selection = rank_selector(normalized_stream_state(in.dense(), eps_));
    mask = selection.mask;
    n_eff = selection.n_eff;
  }

  auto r = attn_hc->route(in, mask);
  auto y = mark(attn(attn_norm(mark(attn_hc->read(in, r), S::kRouting, S::kAttention)), cache),
                S::kAttention, S::kRouting);
  if (observer_) observer_->observe(layer_, Sublayer::kAttention, r, n_eff);
  auto s = attn_hc->write(in, y, r);

  r = ffn_hc->route(s, mask);
  y = mark(ffn(ffn_norm(mark(ffn_hc->read(s, r), S::kRouting, S::kFeedForward))), S::kFeedForward,
           S::kRouting);
  if (observer_) observer_->observe(layer_, Sublayer::kFeedForward, r, n_eff);
  return mark(ffn_hc->write(s, y, r, out_basis), S::kRouting, S::kOutside);
}

void SHCBlockImpl::set_fused_routing(bool fused) {
  attn_hc->set_fused(fused);
  ffn_hc->set_fused(fused);
}

}  // namespace shc
