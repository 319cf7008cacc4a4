#include "hyper_connection.h"

#include <torch/torch.h>

#include "fused_hyper_connection.h"
#include "precision.h"
#include "rms_norm.h"

namespace shc {

torch::Tensor normalized_stream_state(const torch::Tensor& streams, double eps) {
  return rms_normalize(streams.flatten(-2), eps);
}

torch::Tensor first_stream(const torch::Tensor& streams) {
  return streams.size(-2) == 1 ? streams.squeeze(-2) : streams.select(-2, 0);
}

torch::Tensor StreamState::dense() const {
  return basis.defined() ? torch::matmul(basis.to(coords.scalar_type()), coords) : coords;
}

HyperConnectionImpl::HyperConnectionImpl(const ModelConfig& cfg, int64_t depth)
    : n_(cfg.n_streams), d_(cfg.hidden_dim), eps_(cfg.norm_eps) {
  router_ = make_router(cfg, depth);
  if (router_) register_module("router", router_);
}

Routing apply_stream_mask(Routing r, const torch::Tensor& mask) {
  const auto n = mask.size(-1);
  auto outer = mask.unsqueeze(-1) * mask.unsqueeze(-2);
  auto eye = torch::eye(n, mask.options());
  r.pre = r.pre * mask;
  r.post = r.post * mask;
  r.res = outer * r.res + eye * (1 - mask).unsqueeze(-1);
  r.stream_mask = mask;
  return r;
}

// With a compressed state (S = U C) the basis is folded into the small per-token coefficients, so
// that no pass ever expands C to n x d:
// clang-format off
//   x~ W^T = rsqrt(|C|^2 / (n d) + eps) (vec C) W_U^T,  W_U[:, k, :] = sum_j U[j,k] W[:, j, :]
//   H_pre S = (H_pre U) C
//   U_out^T (H_res S + H_post y) = (U_out^T H_res U) C + (U_out^T H_post) y
// clang-format on
Routing HyperConnectionImpl::route(const StreamState& state, const torch::Tensor& stream_mask) {
  if (!router_) return {};
  FullPrecisionScope full_precision;
  const auto& x = state.coords;
  auto weight = router_->projection_weight().to(x.scalar_type());
  if (state.basis.defined()) {
    const auto m = weight.size(0);
    weight = torch::matmul(weight.view({m, n_, d_}).transpose(1, 2), state.basis.to(x.dtype()))
                 .transpose(1, 2)
                 .reshape({m, -1});
  }
  StateGradient link;
  auto r = router_->route_projected(stream_projection(x, weight, n_ * d_, eps_, ops(), &link));
  r.state_gradient = std::move(link);
  return stream_mask.defined() ? apply_stream_mask(std::move(r), stream_mask) : r;
}

torch::Tensor HyperConnectionImpl::read(const StreamState& state, const Routing& routing) const {
  if (!router_) return first_stream(state.coords);
  FullPrecisionScope full_precision;
  const auto& x = state.coords;
  auto pre = routing.pre.to(x.scalar_type());
  if (state.basis.defined()) pre = torch::matmul(pre, state.basis.to(x.scalar_type()));
  return stream_read(x, pre, ops(), routing.state_gradient);
}

torch::Tensor HyperConnectionImpl::write(const StreamState& state, const torch::Tensor& y,
                                         const Routing& routing,
                                         const torch::Tensor& out_basis) const {
  const auto& x = state.coords;
  if (!router_) return x + y.unsqueeze(-2);
  FullPrecisionScope full_precision;
  const auto dtype = x.scalar_type();
  auto res = routing.res.to(dtype), post = routing.post.to(dtype);
  if (state.basis.defined()) res = torch::matmul(res, state.basis.to(dtype));
  if (out_basis.defined()) {
    const auto u = out_basis.to(dtype);
    res = torch::matmul(u.t(), res);
    post = torch::matmul(post, u);
  }
  // History's detached window: only the latest state (stream 0) passes gradient through the mix.
  const int64_t k = x.size(-2);
  const auto mixed = routing.detach_history && k > 1
                         ? torch::cat({x.narrow(-2, 0, 1), x.narrow(-2, 1, k - 1).detach()}, -2)
                         : x;
  return stream_write(mixed, res, post, y.to(dtype), ops(), routing.state_gradient);
}

}  // namespace shc
