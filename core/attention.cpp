#include "attention.h"

#include <torch/torch.h>

#include "rotary_embedding.h"

namespace shc {

KVCache::KVCache(const ModelConfig& cfg, int64_t batch, int64_t capacity_,
                 torch::TensorOptions options)
    : capacity(capacity_) {
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    LayerKVCache c;
    c.k = torch::empty({batch, cfg.kv_heads(), capacity, cfg.head_dim()}, options);
    c.v = torch::empty_like(c.k);
    layers.push_back(std::move(c));
  }
}

MultiHeadAttentionImpl::MultiHeadAttentionImpl(const ModelConfig& cfg)
    : n_heads_(cfg.n_heads),
      n_kv_heads_(cfg.kv_heads()),
      head_dim_(cfg.head_dim()),
      rope_base_(cfg.rope_base) {
  const int64_t d = cfg.hidden_dim;
  auto linear = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  q_proj = register_module("q_proj", linear(d, n_heads_ * head_dim_));
  kv_proj = register_module("kv_proj", linear(d, 2 * n_kv_heads_ * head_dim_));
  o_proj = register_module("o_proj", linear(n_heads_ * head_dim_, d));
}

torch::Tensor MultiHeadAttentionImpl::forward(const torch::Tensor& x, LayerKVCache* cache) {
  const int64_t b = x.size(0), t = x.size(1);
  const int64_t offset = cache ? cache->length : 0;
  auto heads = [&](const torch::Tensor& p, int64_t h) {
    return p.view({b, t, h, head_dim_}).transpose(1, 2);
  };
  auto q = apply_rotary(heads(q_proj(x), n_heads_), offset, rope_base_);
  auto kv = kv_proj(x).chunk(2, -1);
  auto k = apply_rotary(heads(kv[0], n_kv_heads_), offset, rope_base_);
  auto v = heads(kv[1], n_kv_heads_);

  torch::Tensor mask;
  bool causal = t > 1;
  if (cache) {
    TORCH_CHECK(offset + t <= cache->k.size(2), "KV cache overflow: ", offset + t,
                " positions, capacity ", cache->k.size(2));
    cache->k.narrow(2, offset, t).copy_(k);
    cache->v.narrow(2, offset, t).copy_(v);
    cache->length = offset + t;
    k = cache->k.narrow(2, 0, offset + t);
    v = cache->v.narrow(2, 0, offset + t);
    if (offset > 0 && t > 1) {
      // Query i (absolute position offset + i) sees keys 0 .. offset + i.
      mask =
          torch::ones({t, offset + t}, torch::dtype(torch::kBool).device(x.device())).tril(offset);
      causal = false;
    } else if (offset > 0) {
      causal = false;  // a single new query sees every cached key
    }
  }
  auto y = at::scaled_dot_product_attention(
      q, k, v, mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt,
      /*dropout_p=*/0.0, causal,
      /*scale=*/std::nullopt,
      /*enable_gqa=*/n_kv_heads_ != n_heads_);
  return o_proj(y.transpose(1, 2).reshape({b, t, n_heads_ * head_dim_}));
}

}  // namespace shc
