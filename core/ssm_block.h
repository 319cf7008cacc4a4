// SSMBlock: one pre-norm residual Mamba block (Gu & Dao 2023, "Mamba: Linear-Time Sequence
// Modeling with Selective State Spaces", Fig. 3 and Algorithm 2), x + Mixer(RMSNorm(x)) with
//
//   [x, z] = in_proj(u)                      d -> 2 d_inner: the SSM branch and its gate
//   x      = SiLU(causal depthwise conv(x))  over time, kernel conv_kernel, left-padded
//   [r, B, C] = x_proj(x)                    d_inner -> dt_rank + 2N, per token (selective)
//   dt     = softplus(dt_proj(r))            dt_rank -> d_inner, one step size per channel
//   y      = SSM(A, dt, B, C)(x) + D * x     A = -exp(A_log) diagonal (d_inner x N)
//   out    = out_proj(y * SiLU(z))           d_inner -> d
//
// The whole-sequence path (training, prefill) uses the parallel selective scan
// (selective_scan.h); `step` is the O(1) recurrence for one token, on a fixed-size state.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "rms_norm.h"
#include "ssm_config.h"

namespace shc {

// What one block carries from one token to the next: its size does not depend on the position.
struct SSMLayerState {
  torch::Tensor conv;  // (batch, d_inner, conv_kernel - 1): the conv's last inputs, oldest first
  torch::Tensor ssm;   // (batch, d_inner, N): h after the last token
};

class SSMBlockImpl : public torch::nn::Module {
 public:
  // Mamba's initialisation (mamba_simple.py of the paper's code): in_proj, x_proj and the conv
  // keep the framework's default (Kaiming-uniform), out_proj too but scaled by 1/sqrt(n_layers);
  // dt_proj's weight is U(+-dt_rank^-1/2) and its bias makes softplus(bias) log-uniform in
  // [dt_min, dt_max]; A_log = log(1..N) per channel (S4D-real, Gu et al. 2022); D = 1.
  explicit SSMBlockImpl(const SSMConfig& cfg);

  // x (batch, T, d) -> (batch, T, d). With a state, the sequence continues the tokens it has
  // consumed (their conv inputs and SSM state) and the state is advanced past x; without one it
  // starts from zeros.
  torch::Tensor forward(const torch::Tensor& x, SSMLayerState* state = nullptr);
  // One token: x (batch, d) -> (batch, d), advancing `state` in place; equals forward on the
  // sequence so far at its last position.
  torch::Tensor step(const torch::Tensor& x, SSMLayerState& state);

  // A zero state for `batch` rows, in `options`' dtype and device.
  SSMLayerState initial_state(int64_t batch, const torch::TensorOptions& options) const;

  RMSNorm norm{nullptr};
  torch::nn::Linear in_proj{nullptr};   // d -> 2 d_inner, no bias
  torch::nn::Conv1d conv1d{nullptr};    // depthwise (groups = d_inner): weight (d_inner, 1, K)
  torch::nn::Linear x_proj{nullptr};    // d_inner -> dt_rank + 2N, no bias
  torch::nn::Linear dt_proj{nullptr};   // dt_rank -> d_inner, with the dt bias
  torch::nn::Linear out_proj{nullptr};  // d_inner -> d, no bias
  torch::Tensor A_log;                  // (d_inner, N): A = -exp(A_log)
  torch::Tensor D;                      // (d_inner): skip connection of the SSM

 private:
  // The selective part after the conv: xc (.., d_inner) -> dt (.., d_inner), B and C (.., N), in
  // at least fp32.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> selection(const torch::Tensor& xc);
  // y (.., d_inner) in at least fp32 -> the block's residual update (.., d).
  torch::Tensor output(const torch::Tensor& y, const torch::Tensor& xc, const torch::Tensor& z);

  int64_t d_inner_, state_dim_, dt_rank_, kernel_;
};
TORCH_MODULE(SSMBlock);

}  // namespace shc
