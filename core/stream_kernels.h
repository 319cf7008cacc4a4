// CPU kernels of the fused hyper-connection (fused_hyper_connection.h): the passes over the
// stream state X (N tokens, k streams, d features). Each token's work touches only that token's
// k*d values, so every kernel is one sweep over X, threaded over tokens (at::parallel_for) and
// vectorised over d (target_clones: AVX-512, AVX2 or baseline x86-64, chosen at load time).
// Per token, with coefficients from the router:
//   read:   u[e]     = sum_j pre[j] X[j,e]                          (H_pre S)
//   write:  X'[i,e]  = sum_j res[i,j] X[j,e] + post[i] y[e]         (H_res S + H_post y)
// res may be rectangular (m x k): with stream compression the router's n x n matrices are
// rotated into the compressed basis before they reach the kernels.
// No autograd here: the backward kernels are called by the autograd functions.
// Tensors must be contiguous CPU float or double of one dtype.
#pragma once

#include <ATen/core/Tensor.h>

namespace shc::kernels {

// Tokens per at::parallel_for task for a kernel that touches `values_per_token` values per token:
// enough work (~32k values) to outweigh the scheduling.
int64_t grain(int64_t values_per_token);

// sum_{j,e} X[t,j,e]^2 per token: (N, k, d) -> (N).
at::Tensor stream_sum_of_squares(const at::Tensor& x);

// The projection's backward (raw = vec X W^T * inv_rms), with the rest of X's gradient from one
// hyper-connection, so that dX is written once:
//   dX[t,j] = (coef[t] W)[j] + scale[t] X[t,j] + pre[t,j] du[t] + sum_i res[t,i,j] dX'[t,i]
//   dW      = sum_t coef[t]^T vec X[t]
// coef (N, m), weight (m, k*d), x (N, k, d), scale (N); the read part (pre (N, k), grad_u (N, d))
// and the write part (res (N, r, k), grad_out (N, r, d)) may each be undefined (absent).
// Two GEMMs (coef W, then dW) and one sweep between them that adds the rest onto coef W in place.
struct ProjectionGradients {
  at::Tensor x;       // (N, k, d) (undefined unless with_x)
  at::Tensor weight;  // (m, k*d)  (undefined unless with_w)
};
ProjectionGradients stream_projection_backward(const at::Tensor& coef, const at::Tensor& weight,
                                               const at::Tensor& x, const at::Tensor& scale,
                                               const at::Tensor& pre, const at::Tensor& grad_u,
                                               const at::Tensor& res, const at::Tensor& grad_out,
                                               bool with_x, bool with_w);

// u = H_pre X: x (N, k, d), pre (N, k) -> (N, d).
at::Tensor stream_read(const at::Tensor& x, const at::Tensor& pre);

struct ReadGradients {
  at::Tensor x;    // (N, k, d)  dX[j] = pre[j] du  (undefined unless with_x)
  at::Tensor pre;  // (N, k)     dpre[j] = <du, X[j]>
};
ReadGradients stream_read_backward(const at::Tensor& grad_u, const at::Tensor& x,
                                   const at::Tensor& pre, bool with_x = true);

// X' = H_res X + H_post y: x (N, k, d), res (N, m, k), post (N, m), y (N, d) -> (N, m, d).
at::Tensor stream_write(const at::Tensor& x, const at::Tensor& res, const at::Tensor& post,
                        const at::Tensor& y);

struct WriteGradients {
  at::Tensor x;     // (N, k, d)  dX[j]      = sum_i res[i,j] dX'[i]  (undefined unless with_x)
  at::Tensor res;   // (N, m, k)  dres[i,j]  = <dX'[i], X[j]>
  at::Tensor post;  // (N, m)     dpost[i]   = <dX'[i], y>
  at::Tensor y;     // (N, d)     dy         = sum_i post[i] dX'[i]
};
// One sweep over dX', X and y for all four gradients.
WriteGradients stream_write_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                     const at::Tensor& res, const at::Tensor& post,
                                     const at::Tensor& y, bool with_x = true);

}  // namespace shc::kernels
