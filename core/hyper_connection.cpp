#include "hyper_connection.h"

#include <torch/torch.h>

#include "rms_norm.h"

namespace shc {

torch::Tensor normalized_stream_state(const torch::Tensor& streams, double eps) {
  return rms_normalize(streams.flatten(-2), eps);
}

HyperConnectionImpl::HyperConnectionImpl(const ModelConfig& cfg, int64_t depth)
    : eps_(cfg.norm_eps) {
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

Routing HyperConnectionImpl::route(const torch::Tensor& streams, torch::Tensor x_tilde,
                                   const torch::Tensor& stream_mask) {
  if (!router_) return {};
  if (!x_tilde.defined()) x_tilde = normalized_stream_state(streams, eps_);
  auto r = router_->route(x_tilde);
  return stream_mask.defined() ? apply_stream_mask(std::move(r), stream_mask) : r;
}

torch::Tensor HyperConnectionImpl::read(const torch::Tensor& streams,
                                        const Routing& routing) const {
  if (!router_) return streams.select(-2, 0);
  // (..., 1, n) @ (..., n, d): one small batched GEMM per token.
  return torch::matmul(routing.pre.unsqueeze(-2).to(streams.scalar_type()), streams).squeeze(-2);
}

torch::Tensor HyperConnectionImpl::write(const torch::Tensor& streams, const torch::Tensor& y,
                                         const Routing& routing) const {
  if (!router_) return streams + y.unsqueeze(-2);
  const auto dtype = streams.scalar_type();
  const int64_t n = streams.size(-2);
  const auto mixed =
      routing.detach_history && n > 1
          ? torch::cat({streams.narrow(-2, 0, 1), streams.narrow(-2, 1, n - 1).detach()}, -2)
          : streams;
  return torch::matmul(routing.res.to(dtype), mixed) +
         routing.post.to(dtype).unsqueeze(-1) * y.unsqueeze(-2);
}

}  // namespace shc
