#include "swiglu.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/torch.h>

#include "stream_kernels.h"
#include "vector_lanes.h"

#include <cmath>

// The row kernels live beside the other CPU kernels' helpers (vector_lanes.h).
namespace shc::kernels {
namespace {

// Rows [begin, end) of gate_up (rows, 2F) -> y (rows, F).
template <typename T>
SHC_VECTORISED void swiglu_rows(int64_t begin, int64_t end, int64_t f, const T* gate_up, T* y) {
  for (int64_t row = begin; row < end; ++row) {
    const T* g = gate_up + row * 2 * f;
    const T* u = g + f;
    T* out = y + row * f;
    int64_t i = 0;
    for (; i + kLanes<T> <= f; i += kLanes<T>) {
      const Vec<T> gv = load(g + i);
      store(out + i, gv * kernels::sigmoid<T>(gv) * load(u + i));
    }
    for (; i < f; ++i) out[i] = g[i] / (T(1) + std::exp(-g[i])) * u[i];
  }
}

// d g = dy u sigmoid(g) (1 + g (1 - sigmoid(g))),  d u = dy silu(g).
template <typename T>
SHC_VECTORISED void swiglu_backward_rows(int64_t begin, int64_t end, int64_t f, const T* gate_up,
                                         const T* dy, T* grad) {
  for (int64_t row = begin; row < end; ++row) {
    const T* g = gate_up + row * 2 * f;
    const T* u = g + f;
    const T* d = dy + row * f;
    T* dg = grad + row * 2 * f;
    T* du = dg + f;
    int64_t i = 0;
    for (; i + kLanes<T> <= f; i += kLanes<T>) {
      const Vec<T> gv = load(g + i), dv = load(d + i);
      const Vec<T> s = kernels::sigmoid<T>(gv);
      store(du + i, dv * gv * s);
      store(dg + i, dv * load(u + i) * s * (T(1) + gv * (T(1) - s)));
    }
    for (; i < f; ++i) {
      const T s = T(1) / (T(1) + std::exp(-g[i]));
      du[i] = d[i] * g[i] * s;
      dg[i] = d[i] * u[i] * s * (T(1) + g[i] * (T(1) - s));
    }
  }
}

}  // namespace
}  // namespace shc::kernels

namespace shc {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Saves only its input; backward recomputes the sigmoid.
struct SwiGLU : torch::autograd::Function<SwiGLU> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gate_up) {
    auto in = gate_up.contiguous();
    ctx->save_for_backward({in});
    const int64_t f = in.size(-1) / 2, rows = in.numel() / (2 * f);
    auto shape = in.sizes().vec();
    shape.back() = f;
    auto y = torch::empty(shape, in.options());
    AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "swiglu", [&] {
      at::parallel_for(0, rows, kernels::grain(3 * f), [&](int64_t b, int64_t e) {
        kernels::swiglu_rows<scalar_t>(b, e, f, in.const_data_ptr<scalar_t>(),
                                       y.mutable_data_ptr<scalar_t>());
      });
    });
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto in = ctx->get_saved_variables()[0];
    const auto dy = grads[0].contiguous();
    const int64_t f = in.size(-1) / 2, rows = in.numel() / (2 * f);
    auto grad = torch::empty_like(in);
    AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "swiglu_backward", [&] {
      at::parallel_for(0, rows, kernels::grain(5 * f), [&](int64_t b, int64_t e) {
        kernels::swiglu_backward_rows<scalar_t>(b, e, f, in.const_data_ptr<scalar_t>(),
                                                dy.const_data_ptr<scalar_t>(),
                                                grad.mutable_data_ptr<scalar_t>());
      });
    });
    return {grad};
  }
};

void check_gate_up(const torch::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() >= 1 && gate_up.size(-1) % 2 == 0,
              "swiglu: expected (..., 2F) gate and up projections, got ", gate_up.sizes());
}

}  // namespace

torch::Tensor swiglu(const torch::Tensor& gate_up) {
  check_gate_up(gate_up);
  const bool kernel =
      gate_up.device().is_cpu() && gate_up.numel() > 0 &&
      (gate_up.scalar_type() == torch::kFloat || gate_up.scalar_type() == torch::kDouble);
  return kernel ? SwiGLU::apply(gate_up) : swiglu_reference(gate_up);
}

torch::Tensor swiglu_reference(const torch::Tensor& gate_up) {
  check_gate_up(gate_up);
  auto gu = gate_up.chunk(2, -1);
  return torch::silu(gu[0]) * gu[1];
}

}  // namespace shc
