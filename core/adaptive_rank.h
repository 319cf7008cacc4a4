// Adaptive rank selection (SHC Eq. 16): per token, how many streams n_eff in {1..n} a block uses.
// Training: straight-through hard Gumbel-softmax (Jang et al. 2017) at an annealed temperature;
// evaluation: argmax. n_eff acts as the prefix mask P = diag(1..1, 0..0): streams >= n_eff pass
// through unchanged and receive no sublayer output; the effective H_res = P H P + (I - P) keeps
// ||H_res||_2 <= 1 (block diagonal of a compression of H and an identity).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "gumbel_noise.h"

namespace shc {

struct RankSelection {
  torch::Tensor n_eff;  // (...) int64 in [1, n]
  // (..., n) prefix mask, m_i = [i < n_eff]. Built from the straight-through one-hot, so it is
  // exactly 0/1 in the forward pass and carries the soft gradient back to the selector.
  torch::Tensor mask;
};

class AdaptiveRankSelectorImpl : public torch::nn::Module {
 public:
  // n streams; hidden_dim features per token (the n*d normalised stream state); MLP width `width`.
  AdaptiveRankSelectorImpl(int64_t n, int64_t hidden_dim, int64_t width = 16);
  RankSelection forward(const torch::Tensor& x);
  // Logits over n_eff = 1..n: MLP(x) + the learned per-layer bias.
  torch::Tensor logits(const torch::Tensor& x);

  void set_temperature(double tau) { tau_ = tau; }
  double temperature() const { return tau_; }
  // Training draws its Gumbel noise from `key` for this layer (keyed_uniform; x must then be
  // (batch, T, features) with one key row per batch row); null: from the default generator.
  // `key` must outlive its use.
  void set_noise_key(const GumbelNoiseKey* key, int64_t layer) {
    noise_key_ = key;
    layer_ = layer;
  }

  torch::nn::Linear hidden{nullptr}, out{nullptr};
  torch::Tensor layer_bias;  // (n), starts favouring n_eff = n

 private:
  int64_t n_;
  double tau_ = 1.0;
  const GumbelNoiseKey* noise_key_ = nullptr;
  int64_t layer_ = 0;
};
TORCH_MODULE(AdaptiveRankSelector);

// Mask from a (straight-through) one-hot over n_eff - 1: m_i = sum_{j >= i} onehot_j.
torch::Tensor prefix_mask_from_one_hot(const torch::Tensor& one_hot);

}  // namespace shc
