// The selective scan of Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective
// State Spaces", Algorithm 2 "S6") as composed LibTorch ops, for training and prefill:
//
//   h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t       (the simplified zero-order hold of Mamba)
//   y_t = C_t . h_t
//
// per inner channel c with a diagonal state of N entries. There is no per-token loop: the linear
// recurrence h_t = a_t h_{t-1} + b_t is solved by `linear_scan`, a work-efficient parallel scan
// (Blelloch 1990, "Prefix sums and their applications"; for linear RNNs Martin & Cundy 2018,
// "Parallelizing Linear Recurrent Neural Nets Over Sequence Length"): adjacent steps are composed
// pairwise ((a2, b2) o (a1, b1) = (a2 a1, a2 b1 + b2)), the half-length problem is solved
// recursively, and the even positions are filled in from the odd ones. That is O(T) work and
// memory and 2 log2(T) dependent levels, and it only ever multiplies decays in (0, 1] and adds,
// so it is as stable as the sequential loop (no exp of a positive cumulative sum, no log of a
// signed value, unlike cumulative-sum or log-space scans). Its gradient is the same scan run
// backwards in time (a LibTorch autograd function), so backward costs the same again.
//
// The memory is that of Mamba's reference (non-fused) scan: the state of every position is
// materialised. A forward keeps about 2.25 (batch, T, d_inner, N) tensors' worth for backward
// (the decays and the states) and peaks at about 5.6 while it runs, whatever T (measured in
// tests/ssm_test.cpp);
// the fused CUDA kernel of the paper keeps the states in SRAM instead, which composed ops cannot.
#pragma once

#include <torch/types.h>

#include <utility>

namespace shc {

// h_t = a_t * h_{t-1} + b_t with h_{-1} = 0, elementwise over every dimension but the time
// dimension 1: a, b (batch, T, ...) of one shape -> h (batch, T, ...). Differentiable.
torch::Tensor linear_scan(const torch::Tensor& a, const torch::Tensor& b);

struct ScanResult {
  torch::Tensor y;           // (batch, T, d_inner)
  torch::Tensor last_state;  // (batch, d_inner, N): h after the last position
};

// x, dt (batch, T, d_inner); A (d_inner, N), negative; B, C (batch, T, N); h0 (batch, d_inner,
// N) the state before the first position, or undefined for zeros. Everything in one floating
// dtype, computed in it even under autocast (the caller passes fp32 or fp64); the D skip and the
// gate are the caller's.
ScanResult selective_scan(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                          const torch::Tensor& B, const torch::Tensor& C,
                          const torch::Tensor& h0 = {});

}  // namespace shc
