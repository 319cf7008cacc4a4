#include "stream_kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "vector_lanes.h"

// Every token-range function below is a target clone (SHC_VECTORISED) working on 64-byte vectors
// of d, and sums every output in a fixed order that does not depend on how tokens are split between
// threads, so results do not depend on the thread count.
namespace shc::kernels {
namespace {

// out[b] = <a, rows + b * d> for four consecutive rows in one sweep over a (four independent
// accumulators: the sums are those of dot(), bit for bit).
template <typename T>
SHC_INLINE void dot4(const T* __restrict a, const T* __restrict rows, int64_t d, T* out) {
  Vec<T> lanes[4] = {};
  int64_t e = 0;
  for (; e + kLanes<T> <= d; e += kLanes<T>) {
    const Vec<T> av = load(a + e);
    for (int64_t b = 0; b < 4; ++b) lanes[b] += av * load(rows + b * d + e);
  }
  for (int64_t b = 0; b < 4; ++b) {
    T sum = lane_sum<T>(lanes[b]);
    for (int64_t f = e; f < d; ++f) sum += a[f] * rows[b * d + f];
    out[b] = sum;
  }
}

// Vectors of d summed side by side in the loops below: one running sum per vector is a chain of
// dependent FMAs, and the core waits on each result; kBlock independent chains overlap them (at
// d = 128 the chains, not memory, bounded the write). Each output's own order is unchanged.
constexpr int64_t kBlock = 4;

// out[e] = lead_c lead[e] + sum_{q < count} c[q * c_stride] rows[q * d + e] for the B vectors at
// e, summed in that order.
template <int64_t B, typename T>
SHC_INLINE void combine_vectors(T* __restrict out, int64_t d, T lead_c, const T* __restrict lead,
                                int64_t count, const T* __restrict c, int64_t c_stride,
                                const T* __restrict rows, int64_t e) {
  Vec<T> acc[B];
  for (int64_t b = 0; b < B; ++b)
    acc[b] = lead ? lead_c * load(lead + e + b * kLanes<T>) : Vec<T>{};
  for (int64_t q = 0; q < count; ++q) {
    const T cq = c[q * c_stride];
    const T* row = rows + q * d + e;
    for (int64_t b = 0; b < B; ++b) acc[b] += cq * load(row + b * kLanes<T>);
  }
  for (int64_t b = 0; b < B; ++b) store(out + e + b * kLanes<T>, acc[b]);
}

// out[e] = lead_c lead[e] + sum_{q < count} c[q * c_stride] rows[q * d + e], summed in that order
// (lead may be null): every output of the stream kernels is such a combination of the token's
// rows of d values.
template <typename T>
SHC_INLINE void combine(T* __restrict out, int64_t d, T lead_c, const T* __restrict lead,
                        int64_t count, const T* __restrict c, int64_t c_stride,
                        const T* __restrict rows) {
  int64_t e = 0;
  for (; e + kBlock * kLanes<T> <= d; e += kBlock * kLanes<T>) {
    combine_vectors<kBlock>(out, d, lead_c, lead, count, c, c_stride, rows, e);
  }
  for (; e + kLanes<T> <= d; e += kLanes<T>) {
    combine_vectors<1>(out, d, lead_c, lead, count, c, c_stride, rows, e);
  }
  for (; e < d; ++e) {
    T acc = lead ? lead_c * lead[e] : T(0);
    for (int64_t q = 0; q < count; ++q) acc += c[q * c_stride] * rows[q * d + e];
    out[e] = acc;
  }
}

// One stream's row of the state gradient for the B vectors at e (state_gradient_tokens).
template <int64_t B, typename T>
SHC_INLINE void state_gradient_vectors(T* __restrict o, const T* __restrict xj, T scale,
                                       const T* __restrict du, T p, int64_t rows,
                                       const T* __restrict rj, int64_t k, const T* __restrict g,
                                       int64_t d, int64_t e) {
  Vec<T> acc[B];
  for (int64_t b = 0; b < B; ++b) {
    const int64_t f = e + b * kLanes<T>;
    acc[b] = load(o + f) + scale * load(xj + f);
    if (du) acc[b] += p * load(du + f);
  }
  for (int64_t i = 0; i < rows; ++i) {
    const T ri = rj[i * k];
    for (int64_t b = 0; b < B; ++b) acc[b] += ri * load(g + i * d + e + b * kLanes<T>);
  }
  for (int64_t b = 0; b < B; ++b) store(o + e + b * kLanes<T>, acc[b]);
}

// dX[t,j] += scale[t] X[t,j] + pre[t,j] du[t] + sum_i res[t,i,j] dX'[t,i]
// (stream_projection_backward), summed in registers in that order (the tail in the same order).
template <typename T>
SHC_VECTORISED void state_gradient_tokens(int64_t begin, int64_t end, int64_t k, int64_t d,
                                          int64_t r, const T* x, const T* scale, const T* pre,
                                          const T* du, const T* res, const T* g, T* dx) {
  const int64_t kd = k * d;
  for (int64_t t = begin; t < end; ++t) {
    const T* gt = g ? g + t * r * d : nullptr;
    const T* dut = du ? du + t * d : nullptr;
    const T* rt = res ? res + t * r * k : nullptr;
    const int64_t rows = g ? r : 0;
    for (int64_t j = 0; j < k; ++j) {
      const T* xj = x + t * kd + j * d;
      T* o = dx + t * kd + j * d;
      const T p = dut ? pre[t * k + j] : T(0);
      const T* rj = rt ? rt + j : nullptr;
      int64_t e = 0;
      for (; e + kBlock * kLanes<T> <= d; e += kBlock * kLanes<T>) {
        state_gradient_vectors<kBlock>(o, xj, scale[t], dut, p, rows, rj, k, gt, d, e);
      }
      for (; e + kLanes<T> <= d; e += kLanes<T>) {
        state_gradient_vectors<1>(o, xj, scale[t], dut, p, rows, rj, k, gt, d, e);
      }
      for (; e < d; ++e) {
        T acc = o[e] + scale[t] * xj[e];
        if (dut) acc += p * dut[e];
        for (int64_t i = 0; i < rows; ++i) acc += rj[i * k] * gt[i * d + e];
        o[e] = acc;
      }
    }
  }
}

template <typename T>
SHC_VECTORISED void sum_of_squares_tokens(int64_t begin, int64_t end, int64_t kd, const T* x,
                                          T* out) {
  for (int64_t t = begin; t < end; ++t) out[t] = dot(x + t * kd, x + t * kd, kd);
}

template <typename T>
SHC_VECTORISED void read_tokens(int64_t begin, int64_t end, int64_t k, int64_t d, const T* x,
                                const T* pre, T* u) {
  for (int64_t t = begin; t < end; ++t) {
    combine(u + t * d, d, T(0), static_cast<const T*>(nullptr), k, pre + t * k, 1, x + t * k * d);
  }
}

template <typename T>
SHC_VECTORISED void read_backward_tokens(int64_t begin, int64_t end, int64_t k, int64_t d,
                                         const T* du, const T* x, const T* pre, T* dx, T* dpre) {
  for (int64_t t = begin; t < end; ++t) {
    const T* dut = du + t * d;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t row = (t * k + j) * d;
      if (dx) combine(dx + row, d, pre[t * k + j], dut, 0, dut, 0, dut);  // pre[j] du
      dpre[t * k + j] = dot(dut, x + row, d);
    }
  }
}

template <typename T>
SHC_VECTORISED void write_tokens(int64_t begin, int64_t end, int64_t m, int64_t k, int64_t d,
                                 const T* x, const T* res, const T* post, const T* y, T* out) {
  for (int64_t t = begin; t < end; ++t) {
    for (int64_t i = 0; i < m; ++i) {
      combine(out + (t * m + i) * d, d, post[t * m + i], y + t * d, k, res + (t * m + i) * k, 1,
              x + t * k * d);
    }
  }
}

template <typename T>
SHC_VECTORISED void write_backward_tokens(int64_t begin, int64_t end, int64_t m, int64_t k,
                                          int64_t d, const T* g, const T* x, const T* res,
                                          const T* post, const T* y, T* dx, T* dres, T* dpost,
                                          T* dy) {
  for (int64_t t = begin; t < end; ++t) {
    const T* gt = g + t * m * d;
    const T* xt = x + t * k * d;
    const T* yt = y + t * d;
    const T* r = res + t * m * k;
    // The token's m + k + 1 rows (a few KB) stay in cache across the loops below, so memory sees
    // one read of dX', X, y and one write of dX, dy per token.
    for (int64_t j = 0; dx && j < k; ++j) {
      combine(dx + (t * k + j) * d, d, T(0), static_cast<const T*>(nullptr), m, r + j, k, gt);
    }
    combine(dy + t * d, d, T(0), static_cast<const T*>(nullptr), m, post + t * m, 1, gt);
    for (int64_t i = 0; i < m; ++i) {
      const T* gi = gt + i * d;
      T* dr = dres + (t * m + i) * k;
      int64_t j = 0;
      for (; j + 4 <= k; j += 4) dot4(gi, xt + j * d, d, dr + j);
      for (; j < k; ++j) dr[j] = dot(gi, xt + j * d, d);
      dpost[t * m + i] = dot(gi, yt, d);
    }
  }
}

void check_state(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu() && x.is_contiguous(),
              "stream kernels: the state must be a contiguous CPU tensor (N, k, d), got ",
              x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "stream kernels: float or double only, got ", x.scalar_type());
}

void check_operand(const at::Tensor& t, const at::Tensor& x, at::IntArrayRef shape,
                   const char* name) {
  TORCH_CHECK(t.sizes() == shape && t.is_contiguous() && t.scalar_type() == x.scalar_type() &&
                  t.device().is_cpu(),
              "stream kernels: ", name, " must be a contiguous CPU ", x.scalar_type(), " tensor ",
              shape, ", got ", t.scalar_type(), " ", t.sizes());
}

}  // namespace

int64_t grain(int64_t values_per_token) {
  return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, values_per_token));
}

at::Tensor stream_sum_of_squares(const at::Tensor& x) {
  check_state(x);
  const int64_t n = x.size(0), kd = x.size(1) * x.size(2);
  auto out = at::empty({n}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_sum_of_squares", [&] {
    const auto* xp = x.const_data_ptr<scalar_t>();
    auto* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, grain(kd), [&](int64_t b, int64_t e) {
      sum_of_squares_tokens<scalar_t>(b, e, kd, xp, op);
    });
  });
  return out;
}

ProjectionGradients stream_projection_backward(const at::Tensor& coef, const at::Tensor& weight,
                                               const at::Tensor& x, const at::Tensor& scale,
                                               const at::Tensor& pre, const at::Tensor& grad_u,
                                               const at::Tensor& res, const at::Tensor& grad_out,
                                               bool with_x, bool with_w) {
  check_state(x);
  const int64_t n = x.size(0), k = x.size(1), d = x.size(2), kd = k * d, m = weight.size(0);
  check_operand(coef, x, {n, m}, "coef");
  check_operand(weight, x, {m, kd}, "weight");
  check_operand(scale, x, {n}, "scale");
  TORCH_CHECK(pre.defined() == grad_u.defined() && res.defined() == grad_out.defined(),
              "stream_projection_backward: pre and grad_u, res and grad_out come in pairs");
  if (pre.defined()) {
    check_operand(pre, x, {n, k}, "pre");
    check_operand(grad_u, x, {n, d}, "grad_u");
  }
  const int64_t r = res.defined() ? res.size(1) : 0;
  if (res.defined()) {
    check_operand(res, x, {n, r, k}, "res");
    check_operand(grad_out, x, {n, r, d}, "grad_out");
  }
  ProjectionGradients g;
  if (with_x) {
    // coef W as one GEMM: a per-token term in the sweep would re-read W for every token.
    g.x = at::mm(coef, weight).view({n, k, d});
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_projection_backward", [&] {
      auto ptr = [](const at::Tensor& t) {
        return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
      };
      at::parallel_for(0, n, grain((2 * k + r + 1) * d), [&](int64_t b, int64_t e) {
        state_gradient_tokens<scalar_t>(b, e, k, d, r, ptr(x), ptr(scale), ptr(pre), ptr(grad_u),
                                        ptr(res), ptr(grad_out), g.x.mutable_data_ptr<scalar_t>());
      });
    });
  }
  if (with_w) g.weight = at::mm(coef.t(), x.view({n, kd}));
  return g;
}

at::Tensor stream_read(const at::Tensor& x, const at::Tensor& pre) {
  check_state(x);
  const int64_t n = x.size(0), k = x.size(1), d = x.size(2);
  check_operand(pre, x, {n, k}, "pre");
  auto u = at::empty({n, d}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_read", [&] {
    at::parallel_for(0, n, grain(k * d), [&](int64_t b, int64_t e) {
      read_tokens<scalar_t>(b, e, k, d, x.const_data_ptr<scalar_t>(),
                            pre.const_data_ptr<scalar_t>(), u.mutable_data_ptr<scalar_t>());
    });
  });
  return u;
}

ReadGradients stream_read_backward(const at::Tensor& grad_u, const at::Tensor& x,
                                   const at::Tensor& pre, bool with_x) {
  check_state(x);
  const int64_t n = x.size(0), k = x.size(1), d = x.size(2);
  check_operand(pre, x, {n, k}, "pre");
  check_operand(grad_u, x, {n, d}, "grad_u");
  ReadGradients g{with_x ? at::empty_like(x) : at::Tensor(), at::empty_like(pre)};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_read_backward", [&] {
    at::parallel_for(0, n, grain(k * d), [&](int64_t b, int64_t e) {
      read_backward_tokens<scalar_t>(b, e, k, d, grad_u.const_data_ptr<scalar_t>(),
                                     x.const_data_ptr<scalar_t>(), pre.const_data_ptr<scalar_t>(),
                                     with_x ? g.x.mutable_data_ptr<scalar_t>() : nullptr,
                                     g.pre.mutable_data_ptr<scalar_t>());
    });
  });
  return g;
}

namespace {

// N tokens, k streams in, m streams out, d features.
struct WriteShape {
  int64_t n, k, d, m;
};

WriteShape check_write_operands(const at::Tensor& x, const at::Tensor& res, const at::Tensor& post,
                                const at::Tensor& y) {
  check_state(x);
  const WriteShape s{x.size(0), x.size(1), x.size(2), res.size(1)};
  check_operand(res, x, {s.n, s.m, s.k}, "res");
  check_operand(post, x, {s.n, s.m}, "post");
  check_operand(y, x, {s.n, s.d}, "y");
  return s;
}

}  // namespace

at::Tensor stream_write(const at::Tensor& x, const at::Tensor& res, const at::Tensor& post,
                        const at::Tensor& y) {
  const auto shape = check_write_operands(x, res, post, y);
  const int64_t n = shape.n, k = shape.k, d = shape.d, m = shape.m;
  auto out = at::empty({n, m, d}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_write", [&] {
    at::parallel_for(0, n, grain((m + k) * d), [&](int64_t b, int64_t e) {
      write_tokens<scalar_t>(b, e, m, k, d, x.const_data_ptr<scalar_t>(),
                             res.const_data_ptr<scalar_t>(), post.const_data_ptr<scalar_t>(),
                             y.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
    });
  });
  return out;
}

WriteGradients stream_write_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                     const at::Tensor& res, const at::Tensor& post,
                                     const at::Tensor& y, bool with_x) {
  const auto shape = check_write_operands(x, res, post, y);
  const int64_t n = shape.n, k = shape.k, d = shape.d, m = shape.m;
  check_operand(grad_out, x, {n, m, d}, "grad_out");
  WriteGradients g{with_x ? at::empty_like(x) : at::Tensor(), at::empty_like(res),
                   at::empty_like(post), at::empty_like(y)};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_write_backward", [&] {
    at::parallel_for(0, n, grain((2 * m + k + 1) * d), [&](int64_t b, int64_t e) {
      write_backward_tokens<scalar_t>(
          b, e, m, k, d, grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
          res.const_data_ptr<scalar_t>(), post.const_data_ptr<scalar_t>(),
          y.const_data_ptr<scalar_t>(), with_x ? g.x.mutable_data_ptr<scalar_t>() : nullptr,
          g.res.mutable_data_ptr<scalar_t>(), g.post.mutable_data_ptr<scalar_t>(),
          g.y.mutable_data_ptr<scalar_t>());
    });
  });
  return g;
}

}  // namespace shc::kernels
