#include "adaptive_rank.h"

#include <torch/torch.h>

#include "precision.h"

namespace shc {

namespace {
// Initial preference for the full rank: logit +2 on n_eff = n (~ 0.7 probability at n = 4).
constexpr double kFullRankLogit = 2.0;
}  // namespace

AdaptiveRankSelectorImpl::AdaptiveRankSelectorImpl(int64_t n, int64_t hidden_dim, int64_t width)
    : n_(n) {
  hidden = register_module("hidden", torch::nn::Linear(hidden_dim, width));
  out = register_module("out", torch::nn::Linear(width, n));
  auto bias = torch::zeros({n});
  bias[n - 1] = kFullRankLogit;
  layer_bias = register_parameter("layer_bias", bias);
}

torch::Tensor AdaptiveRankSelectorImpl::logits(const torch::Tensor& x) {
  return out(torch::silu(hidden(at_least_fp32(x)))) + layer_bias;
}

torch::Tensor prefix_mask_from_one_hot(const torch::Tensor& one_hot) {
  return one_hot.flip(-1).cumsum(-1).flip(-1);
}

RankSelection AdaptiveRankSelectorImpl::forward(const torch::Tensor& x) {
  auto l = logits(x);
  torch::Tensor one_hot;
  if (is_training()) {
    auto u = gumbel_uniform(noise_key_, layer_, l.sizes(), l.options(), "AdaptiveRankSelector");
    auto soft = torch::softmax((l - torch::log(-torch::log(u))) / tau_, -1);
    auto hard = torch::zeros_like(soft).scatter_(-1, soft.argmax(-1, true), 1.0);
    one_hot = hard - soft.detach() + soft;
  } else {
    one_hot = torch::zeros_like(l).scatter_(-1, l.argmax(-1, true), 1.0);
  }
  RankSelection s;
  s.n_eff = one_hot.detach().argmax(-1) + 1;
  s.mask = prefix_mask_from_one_hot(one_hot);
  return s;
}

}  // namespace shc
