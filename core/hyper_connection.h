// The hyper-connection skeleton shared by every residual kind (SPEC §4.1). Per token, with the
// residual state S (n x d):
//   x~     = RMSNorm(vec S)                       (no gain: the projections absorb it)
//   u      = sum_j H_pre[j] S[j]                   the sublayer input
//   y      = f(RMSNorm(u))                         (f and its norm live in the block)
//   S'[i]  = sum_j H_res[i,j] S[j] + H_post[i] y
// Only the router (routing/*.h) differs between kinds. The plain residual (n = 1, H = 1) skips the
// routing and is exactly S' = S + y.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>

#include "config.h"
#include "routing/router.h"

namespace shc {

// RMSNorm(vec S): (..., n, d) -> (..., n*d) in fp32.
torch::Tensor normalized_stream_state(const torch::Tensor& streams, double eps);

class HyperConnectionImpl : public torch::nn::Module {
 public:
  // `depth` is the 0-based index of the wrapped sublayer over the whole model.
  HyperConnectionImpl(const ModelConfig& cfg, int64_t depth);

  // H_pre, H_post, H_res for each token of `streams` (..., n, d); `x_tilde` may be passed when
  // already computed (normalized_stream_state), `stream_mask` (..., n) applies the adaptive rank.
  // Undefined (empty) Routing for the plain residual.
  Routing route(const torch::Tensor& streams, torch::Tensor x_tilde = {},
                const torch::Tensor& stream_mask = {});
  // u = sum_j H_pre[j] S[j]: (..., n, d) -> (..., d)
  torch::Tensor read(const torch::Tensor& streams, const Routing& routing) const;
  // S' = H_res S + H_post y: returns (..., n, d)
  torch::Tensor write(const torch::Tensor& streams, const torch::Tensor& y,
                      const Routing& routing) const;

  bool is_plain_residual() const { return router_ == nullptr; }
  const std::shared_ptr<RouterImpl>& router() const { return router_; }

 private:
  std::shared_ptr<RouterImpl> router_;
  double eps_;
};
TORCH_MODULE(HyperConnection);

// Restricts a routing to the first n_eff streams of each token: H_pre and H_post are masked and
// H_res becomes P H P + (I - P) (SHC adaptive rank, see adaptive_rank.h).
Routing apply_stream_mask(Routing routing, const torch::Tensor& mask);

}  // namespace shc
