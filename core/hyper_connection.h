// The hyper-connection skeleton shared by every residual kind (SPEC §4.1). Per token, with the
// residual state S (n x d):
//   x~     = RMSNorm(vec S)                       (no gain: the projections absorb it)
//   u      = sum_j H_pre[j] S[j]                   the sublayer input
//   y      = f(RMSNorm(u))                         (f and its norm live in the block)
//   S'[i]  = sum_j H_res[i,j] S[j] + H_post[i] y
// Only the router (routing/*.h) differs between kinds. The plain residual (n = 1, H = 1) skips the
// routing and is exactly S' = S + y.
// Everything here runs in fp32 (fp64 for an fp64 model) even under bf16 autocast: the state S, the
// routing matrices and u; y is widened before the write.
// The passes over the state are fused CPU kernels (fused_hyper_connection.h); the composed LibTorch
// ops are the reference (set_fused(false)) and what other devices run.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <utility>

#include "config.h"
#include "fused_hyper_connection.h"
#include "routing/router.h"

namespace shc {

// Stream 0 of (..., k, d) streams -> (..., d). One stream is squeezed, a view whose gradient is a
// view too; select's backward would write a zero-filled copy of the whole state.
torch::Tensor first_stream(const torch::Tensor& streams);

// RMSNorm(vec S): (..., n, d) -> (..., n*d) in fp32.
torch::Tensor normalized_stream_state(const torch::Tensor& streams, double eps);

// The residual state as a hyper-connection receives it: the streams S (..., n, d) themselves, or,
// with stream compression (SHC Eq. 14), their coordinates C (..., r, d) in a basis U (n, r) with
// orthonormal columns, S = U C. The compressed form is what crosses block boundaries and what
// autograd saves for the first sublayer of a block: the routing folds U into its coefficients
// (H_pre U, H_res U, U^T H_res) instead of expanding C.
struct StreamState {
  StreamState(torch::Tensor streams) : coords(std::move(streams)) {}  // NOLINT: implicit on purpose
  StreamState(torch::Tensor c, torch::Tensor u) : coords(std::move(c)), basis(std::move(u)) {}
  // S (..., n, d)
  torch::Tensor dense() const;

  torch::Tensor coords;  // S, or C
  torch::Tensor basis;   // U (n, r); undefined when coords is S
};

class HyperConnectionImpl : public torch::nn::Module {
 public:
  // `depth` is the 0-based index of the wrapped sublayer over the whole model.
  HyperConnectionImpl(const ModelConfig& cfg, int64_t depth);

  // H_pre, H_post, H_res for each token of `state`; `stream_mask` (..., n) applies the adaptive
  // rank. Undefined (empty) Routing for the plain residual.
  Routing route(const StreamState& state, const torch::Tensor& stream_mask = {});
  // u = sum_j H_pre[j] S[j]: -> (..., d)
  torch::Tensor read(const StreamState& state, const Routing& routing) const;
  // S' = H_res S + H_post y: returns S' (..., n, d), or its coordinates U^T S' (..., r, d) in
  // `out_basis` U (n, r) when given.
  torch::Tensor write(const StreamState& state, const torch::Tensor& y, const Routing& routing,
                      const torch::Tensor& out_basis = {}) const;

  bool is_plain_residual() const { return router_ == nullptr; }
  const std::shared_ptr<RouterImpl>& router() const { return router_; }
  // Fused CPU kernels (default) or the composed reference ops, for the passes here and for the
  // router's own construction; the router holds the choice (the plain residual has none to make).
  void set_fused(bool fused) {
    if (router_) router_->set_ops(fused ? StreamOps::kFused : StreamOps::kComposed);
  }

 private:
  StreamOps ops() const { return router_->ops(); }  // called only where there is a router

  std::shared_ptr<RouterImpl> router_;
  int64_t n_, d_;
  double eps_;
};
TORCH_MODULE(HyperConnection);

// Restricts a routing to the first n_eff streams of each token: H_pre and H_post are masked and
// H_res becomes P H P + (I - P) (SHC adaptive rank, see adaptive_rank.h).
Routing apply_stream_mask(Routing routing, const torch::Tensor& mask);

}  // namespace shc
