// Causal multi-head self-attention with rotary position embeddings (Su et al. 2021, NeoX
// rotate-half layout), optional grouped-query attention (Ainslie et al. 2023) and a KV cache whose
// positions continue from the cached length (so cached decoding equals a full forward pass).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <vector>

#include "config.h"

namespace shc {

// Keys and values of one layer for `capacity` positions: (batch, kv_heads, capacity, head_dim).
struct LayerKVCache {
  torch::Tensor k, v;
  int64_t length = 0;  // positions filled so far
};

// One LayerKVCache per block, preallocated for `capacity` positions.
struct KVCache {
  KVCache(const ModelConfig& cfg, int64_t batch, int64_t capacity, torch::TensorOptions options);
  std::vector<LayerKVCache> layers;
  int64_t capacity;
  int64_t length() const { return layers.empty() ? 0 : layers.front().length; }
};

class MultiHeadAttentionImpl : public torch::nn::Module {
 public:
  explicit MultiHeadAttentionImpl(const ModelConfig& cfg);
  // x (batch, T, d) -> (batch, T, d). With a cache, the new keys/values are appended and the
  // queries sit at positions cache.length .. cache.length + T - 1.
  torch::Tensor forward(const torch::Tensor& x, LayerKVCache* cache = nullptr);

  torch::nn::Linear q_proj{nullptr}, kv_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t n_heads_, n_kv_heads_, head_dim_;
  double rope_base_;
};
TORCH_MODULE(MultiHeadAttention);

}  // namespace shc
