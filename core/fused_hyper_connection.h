// The hyper-connection's passes over the residual state as autograd functions over hand-written
// CPU kernels (stream_kernels.h). A chain of LibTorch ops would sweep the n*d state once per op and
// save n*d intermediates for backward (x~ = RMSNorm(vec S), the broadcast products); each function
// here sweeps the state once forward and saves only its inputs and per-token scalars, and the
// three write one gradient of the state between them (StateGradientLink). HyperConnection
// (hyper_connection.h) uses them on CPU; the composed ops remain the reference path (tests, GPUs).
// X is the state as the hyper-connection receives it, (..., k, d): the streams S (k = n) or, with
// stream compression, their coordinates C = U^T S (k = r) — see StreamState.
#pragma once

#include <torch/types.h>

#include <memory>

namespace shc {

// Which implementation runs: the fused kernels (CPU float/double only; elsewhere the composed ops
// run instead) or the composed LibTorch ops, the reference that tests compare against. The
// composed forms avoid n*d intermediates too where LibTorch allows (no materialised x~).
enum class StreamOps { kFused, kComposed };

// Whether a fused kernel runs for x: `ops` asks for it and x is a CPU float or double tensor
// (every kernel's condition: the stream passes here, mHC's Sinkhorn, SHC's mixing).
bool fused_kernels_apply(const torch::Tensor& x, StreamOps ops);

// One hyper-connection's state gradient in one pass (fused path). X feeds three passes, so
// autograd would add three n*d gradients (projection, read, write). Instead the read's and the
// write's backward leave their parts here (du with H_pre, dX' with H_res) and the projection's
// backward sums all of dX in one sweep. That backward runs after both: H_pre, H_res and H_post are
// made from its output, so the engine reaches it only once read and write have passed their
// gradients on. A link serves one backward pass (a second pass with retain_graph, or any order the
// engine did not guarantee, falls back to separate gradients). Read and write join a link only
// for the very state its projection read and with coefficients whose autograd graph reaches the
// projection (checked): only then must the engine run their backward first. Opaque; made by
// stream_projection.
struct StateGradientLink;
using StateGradient = std::shared_ptr<StateGradientLink>;

// raw = (vec X) W^T * rsqrt(|X|^2 / count + eps): the router's projections of x~ = RMSNorm(vec S)
// without materialising x~. weight (m, k*d); count = n*d, the size of the mean in RMSNorm (equal
// to k*d unless X holds orthonormal coordinates, whose norm equals that of S). -> (..., m); an
// empty weight (m = 0) reads nothing. With `link` given, the fused path sets it to a link that
// stream_read and stream_write on the same x may join (null otherwise).
torch::Tensor stream_projection(const torch::Tensor& x, const torch::Tensor& weight, int64_t count,
                                double eps, StreamOps ops, StateGradient* link = nullptr);

// u = sum_j pre[j] X[j]: x (..., k, d), pre (..., k) -> (..., d). `link`: see StateGradientLink.
torch::Tensor stream_read(const torch::Tensor& x, const torch::Tensor& pre, StreamOps ops,
                          const StateGradient& link = nullptr);

// X' = res X + post y: x (..., k, d), res (..., m, k), post (..., m), y (..., d) -> (..., m, d).
torch::Tensor stream_write(const torch::Tensor& x, const torch::Tensor& res,
                           const torch::Tensor& post, const torch::Tensor& y, StreamOps ops,
                           const StateGradient& link = nullptr);

}  // namespace shc
