// SwiGLU feed-forward (Shazeer 2020): W_down (silu(x W_gate) * (x W_up)), no biases. Gate and up
// projections are one GEMM.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace shc {

class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(int64_t hidden_dim, int64_t ffn_dim);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear gate_up{nullptr}, down{nullptr};
};
TORCH_MODULE(FeedForward);

}  // namespace shc
