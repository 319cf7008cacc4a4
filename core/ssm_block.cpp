#include "ssm_block.h"

#include <torch/torch.h>

#include <cmath>

#include "precision.h"
#include "selective_scan.h"

namespace shc {

namespace F = torch::nn::functional;

// Mamba's floor on the initial step size (dt_init_floor).
constexpr double kDtInitFloor = 1e-4;

SSMBlockImpl::SSMBlockImpl(const SSMConfig& cfg)
    : d_inner_(cfg.d_inner()),
      state_dim_(cfg.state_dim),
      dt_rank_(cfg.resolved_dt_rank()),
      kernel_(cfg.conv_kernel) {
  const int64_t d = cfg.hidden_dim, di = d_inner_, n = state_dim_;
  norm = register_module("norm", RMSNorm(d, cfg.norm_eps));
  in_proj = register_module("in_proj",
                            torch::nn::Linear(torch::nn::LinearOptions(d, 2 * di).bias(false)));
  conv1d = register_module("conv1d",
                           torch::nn::Conv1d(torch::nn::Conv1dOptions(di, di, kernel_).groups(di)));
  x_proj = register_module(
      "x_proj", torch::nn::Linear(torch::nn::LinearOptions(di, dt_rank_ + 2 * n).bias(false)));
  dt_proj = register_module("dt_proj", torch::nn::Linear(dt_rank_, di));
  out_proj =
      register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(di, d).bias(false)));
  A_log = register_parameter("A_log",
                             torch::log(torch::arange(1, n + 1, torch::kFloat)).repeat({di, 1}));
  D = register_parameter("D", torch::ones({di}));

  torch::NoGradGuard no_grad;
  // Residual updates shrink with depth so the residual stream's variance does not grow with it.
  out_proj->weight.div_(std::sqrt(double(cfg.n_layers)));
  const double dt_std = 1.0 / std::sqrt(double(dt_rank_));
  dt_proj->weight.uniform_(-dt_std, dt_std);
  // softplus(bias) = dt, log-uniform in [dt_min, dt_max]: bias = dt + log(1 - exp(-dt)), the
  // inverse of softplus.
  auto dt = torch::exp(torch::rand({di}) * (std::log(cfg.dt_max) - std::log(cfg.dt_min)) +
                       std::log(cfg.dt_min))
                .clamp_min(kDtInitFloor);
  dt_proj->bias.copy_(dt + torch::log(-torch::expm1(-dt)));
}

SSMLayerState SSMBlockImpl::initial_state(int64_t batch,
                                          const torch::TensorOptions& options) const {
  return {torch::zeros({batch, d_inner_, kernel_ - 1}, options),
          torch::zeros({batch, d_inner_, state_dim_}, options)};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> SSMBlockImpl::selection(
    const torch::Tensor& xc) {
  auto parts = x_proj(xc).split_with_sizes({dt_rank_, state_dim_, state_dim_}, -1);
  // The dt bias is added in fp32 (as in the paper's kernel): it sets the step size that the
  // exponentials below amplify.
  auto dt = torch::softplus(at_least_fp32(F::linear(parts[0], dt_proj->weight)) +
                            at_least_fp32(dt_proj->bias));
  return {dt, at_least_fp32(parts[1]), at_least_fp32(parts[2])};
}

torch::Tensor SSMBlockImpl::output(const torch::Tensor& y, const torch::Tensor& xc,
                                   const torch::Tensor& z) {
  auto gated = (y + at_least_fp32(xc) * at_least_fp32(D)) * torch::silu(at_least_fp32(z));
  return out_proj(gated.to(z.scalar_type()));
}

torch::Tensor SSMBlockImpl::forward(const torch::Tensor& x, SSMLayerState* state) {
  const int64_t batch = x.size(0), T = x.size(1);
  auto xz = in_proj(norm(x)).chunk(2, -1);  // x branch, gate z: (batch, T, d_inner) each
  auto seq = xz[0].transpose(1, 2);         // (batch, d_inner, T)
  // Causal conv: the K - 1 inputs before the sequence (the state's, or zeros) go in front.
  auto history = state ? state->conv.to(seq.scalar_type())
                       : torch::zeros({batch, d_inner_, kernel_ - 1}, seq.options());
  auto padded = torch::cat({history, seq}, 2);            // (batch, d_inner, K - 1 + T)
  auto xc = torch::silu(conv1d(padded)).transpose(1, 2);  // (batch, T, d_inner)
  auto [dt, B, C] = selection(xc);
  const auto A = -torch::exp(at_least_fp32(A_log));
  auto scan = selective_scan(at_least_fp32(xc), dt, A, B, C,
                             state ? state->ssm.to(dt.scalar_type()) : torch::Tensor());
  if (state) {
    state->conv = padded.narrow(2, T, kernel_ - 1).to(state->conv.scalar_type()).contiguous();
    state->ssm = scan.last_state.to(state->ssm.scalar_type());
  }
  return x + output(scan.y, xc, xz[1]);
}

torch::Tensor SSMBlockImpl::step(const torch::Tensor& x, SSMLayerState& state) {
  auto xz = in_proj(norm(x)).chunk(2, -1);  // (batch, d_inner) each
  auto window = torch::cat({state.conv.to(xz[0].scalar_type()), xz[0].unsqueeze(-1)}, -1);
  state.conv = window.narrow(-1, 1, kernel_ - 1).to(state.conv.scalar_type()).contiguous();
  // The depthwise conv at one position: window (batch, d_inner, K) . weight (d_inner, 1, K).
  auto xc = torch::silu((window * conv1d->weight.squeeze(1)).sum(-1) + conv1d->bias);
  auto [dt, B, C] = selection(xc);  // (batch, d_inner), (batch, N), (batch, N)
  const auto A = -torch::exp(at_least_fp32(A_log));
  // h = exp(dt A) h + dt B x, y = C . h: (batch, d_inner, N) and (batch, d_inner).
  auto h = torch::exp(dt.unsqueeze(-1) * A) * state.ssm.to(dt.scalar_type()) +
           (dt * at_least_fp32(xc)).unsqueeze(-1) * B.unsqueeze(1);
  state.ssm = h.to(state.ssm.scalar_type());
  auto y = (h * C.unsqueeze(1)).sum(-1);
  return x + output(y, xc, xz[1]);
}

}  // namespace shc
