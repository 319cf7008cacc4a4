// Rotary position embedding (RoFormer, Su et al. 2021; NeoX "rotate half" layout): feature i and
// i + head_dim/2 of position p are rotated by the angle p * base^(-2i/head_dim):
//   y[i]        = x[i] cos - x[i + half] sin
//   y[i + half] = x[i + half] cos + x[i] sin
// On CPU one pass over x forward and one over dy backward (the rotation by minus the angle); the
// composed ops (two half copies, a concatenation, broadcast products) remain the reference and
// what other devices run.
#pragma once

#include <torch/types.h>

namespace shc {

// Rotates x (batch, heads, T, head_dim) by the angles of positions offset .. offset+T-1, in fp32
// at least (the result has x's dtype). head_dim must be even.
torch::Tensor apply_rotary(const torch::Tensor& x, int64_t offset, double base);

// The composed LibTorch ops: the reference for tests, and the path on GPUs.
torch::Tensor apply_rotary_reference(const torch::Tensor& x, int64_t offset, double base);

}  // namespace shc
