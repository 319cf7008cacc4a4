#include "rotary_embedding.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/torch.h>

#include "precision.h"
#include "stream_kernels.h"
#include "vector_lanes.h"

// The row kernel lives beside the other CPU kernels' helpers (vector_lanes.h).
namespace shc::kernels {
namespace {

// Strides of a (batch, heads, T, head_dim) tensor whose last dimension is contiguous.
struct RowStrides {
  int64_t batch, head, position;
};

// out = x rotated by sign * angle, row by row (a row: one position of one head, head_dim values).
// Each value depends only on its own pair, so any split of rows between threads gives the same
// bits.
template <typename T>
SHC_VECTORISED void rotate_rows(int64_t begin, int64_t end, int64_t heads, int64_t t, int64_t half,
                                const T* x, RowStrides xs, const T* cos, const T* sin, T sign,
                                T* out, RowStrides os) {
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / (heads * t), h = (r / t) % heads, p = r % t;
    const T* x1 = x + b * xs.batch + h * xs.head + p * xs.position;
    const T* x2 = x1 + half;
    T* y1 = out + b * os.batch + h * os.head + p * os.position;
    T* y2 = y1 + half;
    const T* c = cos + p * half;
    const T* s = sin + p * half;
    int64_t i = 0;
    for (; i + kLanes<T> <= half; i += kLanes<T>) {
      const Vec<T> a = load(x1 + i), b2 = load(x2 + i), cv = load(c + i), sv = sign * load(s + i);
      store(y1 + i, a * cv - b2 * sv);
      store(y2 + i, b2 * cv + a * sv);
    }
    for (; i < half; ++i) {
      const T a = x1[i], b2 = x2[i], sv = sign * s[i];
      y1[i] = a * c[i] - b2 * sv;
      y2[i] = b2 * c[i] + a * sv;
    }
  }
}

}  // namespace
}  // namespace shc::kernels

namespace shc {
namespace {

struct Tables {
  torch::Tensor cos, sin;  // (T, half)
};

// cos and sin of angle(p, i) = p * base^(-2i / head_dim), in `dtype`; both paths use these.
Tables rotary_tables(int64_t t, int64_t half, int64_t offset, double base,
                     torch::TensorOptions opts) {
  auto inv_freq = torch::pow(base, -torch::arange(0, half, opts) / double(half));
  auto angles = torch::outer(torch::arange(offset, offset + t, opts), inv_freq);
  return {angles.cos(), angles.sin()};
}

using kernels::RowStrides;

RowStrides row_strides(const torch::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}

// out (shaped and strided like x) = x rotated by sign * the tables' angles.
torch::Tensor rotate(const torch::Tensor& x, const Tables& tables, double sign) {
  auto in = x.stride(-1) == 1 ? x : x.contiguous();
  auto out = torch::empty_like(in);
  const int64_t heads = in.size(1), t = in.size(2), half = in.size(3) / 2;
  const int64_t rows = in.size(0) * heads * t;
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "rotate_rows", [&] {
    const auto* xp = in.const_data_ptr<scalar_t>();
    const auto* cp = tables.cos.const_data_ptr<scalar_t>();
    const auto* sp = tables.sin.const_data_ptr<scalar_t>();
    auto* op = out.mutable_data_ptr<scalar_t>();
    const auto xs = row_strides(in), os = row_strides(out);
    at::parallel_for(0, rows, kernels::grain(2 * half), [&](int64_t b, int64_t e) {
      kernels::rotate_rows<scalar_t>(b, e, heads, t, half, xp, xs, cp, sp,
                                     static_cast<scalar_t>(sign), op, os);
    });
  });
  return out;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Saves only the (T, half) tables: backward rotates dy back by minus the angle.
struct RotaryEmbedding : torch::autograd::Function<RotaryEmbedding> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& cos, const torch::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rotate(x, {cos, sin}, 1.0);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    return {rotate(grads[0], {saved[0], saved[1]}, -1.0), torch::Tensor(), torch::Tensor()};
  }
};

void check_rotary_input(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(-1) % 2 == 0,
              "apply_rotary: expected (batch, heads, T, even head_dim), got ", x.sizes());
}

}  // namespace

torch::Tensor apply_rotary(const torch::Tensor& x, int64_t offset, double base) {
  check_rotary_input(x);
  if (!x.device().is_cpu()) return apply_rotary_reference(x, offset, base);
  auto xf = at_least_fp32(x);
  const int64_t t = x.size(2), half = x.size(3) / 2;
  auto tables = rotary_tables(t, half, offset, base, xf.options());
  return RotaryEmbedding::apply(xf, tables.cos, tables.sin).to(x.scalar_type());
}

torch::Tensor apply_rotary_reference(const torch::Tensor& x, int64_t offset, double base) {
  check_rotary_input(x);
  const int64_t t = x.size(2), half = x.size(3) / 2;
  auto xf = at_least_fp32(x);
  auto tables = rotary_tables(t, half, offset, base, xf.options());
  auto cos = torch::cat({tables.cos, tables.cos}, -1);
  auto sin = torch::cat({tables.sin, tables.sin}, -1);
  auto rotated = torch::cat({-xf.narrow(-1, half, half), xf.narrow(-1, 0, half)}, -1);
  return (xf * cos + rotated * sin).to(x.scalar_type());
}

}  // namespace shc
