// Exact Euclidean projection onto the probability simplex (Held, Wolfe and Crowder 1974; Duchi,
// Shalev-Shwartz, Singer and Chandra 2008; Condat 2016), along the last dimension:
//   P(v) = argmin_{a >= 0, sum a = 1} ||a - v||_2 = max(v - theta, 0)
// with the threshold theta found from v sorted in decreasing order u_1 >= ... >= u_H:
//   rho = max { j : u_j - (sum_{i <= j} u_i - 1) / j >= 0 },  theta = (sum_{i <= rho} u_i - 1) /
//   rho
// O(H log H) per row (the sort). Not a softmax: entries below theta are exactly 0 (sparse), and a
// point already on the simplex is returned unchanged (up to round-off of the sum).
//
// Gradients: P is piecewise linear; autograd goes through the sort, the cumulative sum and the
// clamp. Inside a piece, dP/dv = diag(s) - s s^T / |s| with s the support indicator (the exact
// Jacobian). At a kink the support counts the entries that sit exactly at the threshold (">= 0"
// above, and the clamp passes gradient at 0), so at a vertex such as e_1 the gradient is the
// simplex-tangent projection g - mean(g) of the upstream gradient rather than 0: weights that
// start at a vertex can still leave it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace shc {

// P(v) for each row of v (..., H); fp32 at least (fp64 stays fp64).
at::Tensor project_to_simplex(const at::Tensor& v);

// The exact projection onto { a >= 0, sum a = 1, a[index] >= floor }, 0 <= floor < 1: shifting
// a[index] by the floor turns the set into a simplex of mass 1 - floor, so
//   P_floor(v) = floor * e_index + (1 - floor) * P((v - floor * e_index) / (1 - floor)).
at::Tensor project_to_simplex(const at::Tensor& v, int64_t index, double floor);

}  // namespace shc
