#include "selective_scan.h"

#include <torch/torch.h>

namespace shc {

namespace {

// The recursive scan itself, h_t = a_t h_{t-1} + b_t along dimension 1 with h_{-1} = 0.
torch::Tensor scan(const torch::Tensor& a, const torch::Tensor& b) {
  const int64_t T = a.size(1);
  if (T == 1) return b.clone();  // a copy: LinearScan's output must not alias its input
  // Pairs (2i, 2i + 1) for i < P, as strided views (no copy). With odd T the last position is
  // unpaired and is filled in with the even ones.
  const int64_t P = T / 2, E = (T + 1) / 2;  // E: positions 0, 2, 4, ... (even ones)
  auto a_even = a.slice(1, 0, T, 2), b_even = b.slice(1, 0, T, 2);  // (batch, E, ...)
  auto a_odd = a.slice(1, 1, T, 2), b_odd = b.slice(1, 1, T, 2);    // (batch, P, ...)
  // h_{2i+1} = (a_{2i+1} a_{2i}) h_{2i-1} + (a_{2i+1} b_{2i} + b_{2i+1}): a recurrence over pairs.
  auto a_pair = a_odd * a_even.narrow(1, 0, P);
  auto b_pair = a_odd * b_even.narrow(1, 0, P) + b_odd;
  auto h_odd = scan(a_pair, b_pair);  // (batch, P, ...): h at 1, 3, 5, ...
  // h_{2i} = a_{2i} h_{2i-1} + b_{2i}, with h_{-1} = 0.
  auto h_before =
      torch::cat({torch::zeros_like(h_odd.narrow(1, 0, 1)), h_odd.narrow(1, 0, E - 1)}, 1);
  auto h_even = a_even * h_before + b_even;  // (batch, E, ...)
  auto interleaved = torch::stack({h_even.narrow(1, 0, P), h_odd}, 2).flatten(1, 2);
  return E == P ? interleaved : torch::cat({interleaved, h_even.narrow(1, P, 1)}, 1);
}

// Autograd keeps only a and h: the gradient of the recurrence is the same recurrence run
// backwards in time, g_t = dL/dh_t + a_{t+1} g_{t+1}, and then dL/db_t = g_t and dL/da_t =
// g_t h_{t-1}. Left to autograd, the recursion's intermediates (a few more copies of the
// states) would be kept as well.
class LinearScan : public torch::autograd::Function<LinearScan> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a,
                               const torch::Tensor& b) {
    auto h = scan(a, b);
    ctx->save_for_backward({a, h});
    return h;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &a = saved[0], &h = saved[1];
    const int64_t T = a.size(1);
    auto first = [](const torch::Tensor& t) { return torch::zeros_like(t.narrow(1, 0, 1)); };
    // a_{t+1} for t < T - 1 and 0 after the last position, reversed in time.
    auto a_next = torch::cat({a.narrow(1, 1, T - 1), first(a)}, 1).flip(1);
    auto g = scan(a_next, grads[0].flip(1)).flip(1);
    auto h_prev = torch::cat({first(h), h.narrow(1, 0, T - 1)}, 1);
    return {g * h_prev, g};
  }
};

}  // namespace

torch::Tensor linear_scan(const torch::Tensor& a, const torch::Tensor& b) {
  return LinearScan::apply(a, b);
}

ScanResult selective_scan(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                          const torch::Tensor& B, const torch::Tensor& C, const torch::Tensor& h0) {
  // Discretisation per position, channel and state entry: (batch, T, d_inner, N) each.
  auto decay = torch::exp(dt.unsqueeze(-1) * A);
  auto input = (dt * x).unsqueeze(-1) * B.unsqueeze(2);
  if (h0.defined()) {
    // The carried state enters as part of the first input: b_0 += a_0 h0.
    const int64_t T = x.size(1);
    auto first = input.narrow(1, 0, 1) + decay.narrow(1, 0, 1) * h0.unsqueeze(1);
    input = T == 1 ? first : torch::cat({first, input.narrow(1, 1, T - 1)}, 1);
  }
  auto h = linear_scan(decay, input);  // (batch, T, d_inner, N)
  // y_t = C_t . h_t, elementwise and summed (not a matmul, which bf16 autocast would lower).
  auto y = (h * C.unsqueeze(2)).sum(-1);
  return {y, h.select(1, h.size(1) - 1)};
}

}  // namespace shc
