#include "feed_forward.h"

#include <torch/torch.h>

#include "swiglu.h"

namespace shc {

FeedForwardImpl::FeedForwardImpl(int64_t hidden_dim, int64_t ffn_dim) {
  gate_up = register_module(
      "gate_up", torch::nn::Linear(torch::nn::LinearOptions(hidden_dim, 2 * ffn_dim).bias(false)));
  down = register_module(
      "down", torch::nn::Linear(torch::nn::LinearOptions(ffn_dim, hidden_dim).bias(false)));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  return down(swiglu(gate_up(x)));
}

}  // namespace shc
