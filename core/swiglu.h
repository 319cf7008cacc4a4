// SwiGLU's gate (Shazeer 2020, "GLU Variants Improve Transformer") on the fused gate/up
// projection: gate_up (..., 2F) = [g, u] -> silu(g) * u (..., F), silu(g) = g sigmoid(g).
// On CPU one pass forward and one backward, which writes d gate_up whole (the composed ops split
// the projection in two, and autograd joins the two halves' gradients with a serial
// concatenation); the composed ops remain the reference and what other devices run.
#pragma once

#include <torch/types.h>

namespace shc {

torch::Tensor swiglu(const torch::Tensor& gate_up);

// The composed LibTorch ops: the reference for tests, and the path on GPUs.
torch::Tensor swiglu_reference(const torch::Tensor& gate_up);

}  // namespace shc
