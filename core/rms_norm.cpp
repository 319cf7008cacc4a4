#include "rms_norm.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "precision.h"
#include "stream_kernels.h"
#include "vector_lanes.h"

// The row kernels live beside the other CPU kernels' helpers (vector_lanes.h).
namespace shc::kernels {
namespace {

// The weight's gradient is summed per fixed chunk of kChunkRows rows (the thread count only decides
// which thread sums which chunk), then over the chunks in order, so its bits do not depend on the
// thread count.
constexpr int64_t kChunkRows = 256;

// out[e] = sum_c partial[c * d + e] over the chunks c = 0, 1, ... in order.
template <typename T>
SHC_VECTORISED void sum_chunks(int64_t chunks, int64_t d, const T* __restrict partial,
                               T* __restrict out) {
  for (int64_t e = 0; e < d; ++e) out[e] = chunks > 0 ? partial[e] : T(0);
  for (int64_t c = 1; c < chunks; ++c) {
    const T* p = partial + c * d;
    for (int64_t e = 0; e < d; ++e) out[e] += p[e];
  }
}

// y = x r w per row, r = 1 / sqrt(mean(x^2) + eps) (saved per row for backward).
template <typename T>
SHC_VECTORISED void norm_rows(int64_t begin, int64_t end, int64_t d, T eps, const T* x, const T* w,
                              T* y, T* inv_rms) {
  for (int64_t row = begin; row < end; ++row) {
    const T* xr = x + row * d;
    T* yr = y + row * d;
    const T r = T(1) / std::sqrt(kernels::dot(xr, xr, d) / T(d) + eps);
    inv_rms[row] = r;
    int64_t e = 0;
    for (; e + kLanes<T> <= d; e += kLanes<T>) store(yr + e, load(xr + e) * r * load(w + e));
    for (; e < d; ++e) yr[e] = xr[e] * r * w[e];
  }
}

// With g = dy w:  dx = r g - x r^3 <g, x> / d;  dw += dy x r, into the chunk's partial sum.
template <typename T>
SHC_VECTORISED void norm_backward_rows(int64_t begin, int64_t end, int64_t d, const T* x,
                                       const T* w, const T* inv_rms, const T* dy, T* dx,
                                       T* dw_partial) {
  for (int64_t row = begin; row < end; ++row) {
    const T* xr = x + row * d;
    const T* dyr = dy + row * d;
    T* dxr = dx + row * d;
    const T r = inv_rms[row];
    Vec<T> lanes = {};
    int64_t e = 0;
    for (; e + kLanes<T> <= d; e += kLanes<T>) lanes += load(dyr + e) * load(w + e) * load(xr + e);
    T gx = kernels::lane_sum<T>(lanes);
    for (; e < d; ++e) gx += dyr[e] * w[e] * xr[e];
    const T c = r * r * r * gx / T(d);
    for (e = 0; e + kLanes<T> <= d; e += kLanes<T>) {
      const Vec<T> xv = load(xr + e), dyv = load(dyr + e);
      store(dxr + e, r * dyv * load(w + e) - c * xv);
      store(dw_partial + e, load(dw_partial + e) + dyv * xv * r);
    }
    for (; e < d; ++e) {
      dxr[e] = r * dyr[e] * w[e] - c * xr[e];
      dw_partial[e] += dyr[e] * xr[e] * r;
    }
  }
}

}  // namespace
}  // namespace shc::kernels

namespace shc {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Saves x and one 1/rms per row; the weight's gradient sums fixed chunks of rows in order, so its
// bits do not depend on the thread count.
struct RMSNormFunction : torch::autograd::Function<RMSNormFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, double eps) {
    auto in = x.contiguous();
    auto w = weight.contiguous();
    const int64_t d = in.size(-1), rows = in.numel() / d;
    auto y = torch::empty_like(in);
    auto inv_rms = torch::empty({rows}, in.options());
    AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "rms_norm", [&] {
      at::parallel_for(0, rows, kernels::grain(2 * d), [&](int64_t b, int64_t e) {
        kernels::norm_rows<scalar_t>(b, e, d, static_cast<scalar_t>(eps),
                                     in.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                     y.mutable_data_ptr<scalar_t>(),
                                     inv_rms.mutable_data_ptr<scalar_t>());
      });
    });
    ctx->save_for_backward({in, w, inv_rms});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &inv_rms = saved[2];
    const auto dy = grads[0].contiguous();
    const int64_t d = x.size(-1), rows = x.numel() / d;
    const int64_t chunks = (rows + kernels::kChunkRows - 1) / kernels::kChunkRows;
    auto dx = torch::empty_like(x);
    auto partial = torch::zeros({chunks, d}, x.options());
    auto dw = torch::empty({d}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rms_norm_backward", [&] {
      at::parallel_for(0, chunks, 1, [&](int64_t c_begin, int64_t c_end) {
        for (int64_t c = c_begin; c < c_end; ++c) {
          const int64_t begin = c * kernels::kChunkRows;
          const int64_t end = std::min(rows, begin + kernels::kChunkRows);
          kernels::norm_backward_rows<scalar_t>(
              begin, end, d, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
              inv_rms.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(),
              dx.mutable_data_ptr<scalar_t>(), partial.mutable_data_ptr<scalar_t>() + c * d);
        }
      });
      kernels::sum_chunks<scalar_t>(chunks, d, partial.const_data_ptr<scalar_t>(),
                                    dw.mutable_data_ptr<scalar_t>());
    });
    return {dx, dw, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor rms_normalize(const torch::Tensor& x, double eps) {
  auto xf = at_least_fp32(x);
  return xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
}

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x.size(-1) &&
                  weight.device() == x.device(),
              "rms_norm: the gain must be one value per feature of x, on x's device; got x ",
              x.sizes(), " on ", x.device(), " and gain ", weight.sizes(), " on ", weight.device());
  if (!x.device().is_cpu() || x.numel() == 0) return rms_norm_reference(x, weight, eps);
  auto xf = at_least_fp32(x);
  return RMSNormFunction::apply(xf, weight.to(xf.scalar_type()), eps).to(x.scalar_type());
}

torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  auto y = rms_normalize(x, eps);
  return (y * weight.to(y.scalar_type())).to(x.scalar_type());
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return rms_norm(x, weight, eps_);
}

}  // namespace shc
