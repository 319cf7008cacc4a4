#include "stream_kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

// Each token-range function is compiled three times and picked once at load time by the CPU's
// features (GCC function multiversioning); the loops are written so that the compiler vectorises
// them over d without reassociating floating-point sums (fixed lane accumulators), so results do
// not depend on the thread count.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SHC_VECTORISED __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SHC_VECTORISED
#endif
#define SHC_INLINE inline __attribute__((always_inline))

namespace shc::kernels {
namespace {

// Lane accumulators per dot product: one 64-byte vector of T.
template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);

// Tokens per parallel task: enough work (~32k values) to outweigh the scheduling.
int64_t grain(int64_t values_per_token) {
  return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, values_per_token));
}

template <typename T>
SHC_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t d) {
  T lanes[kLanes<T>] = {};
  int64_t e = 0;
  for (; e + kLanes<T> <= d; e += kLanes<T>) {
    for (int64_t l = 0; l < kLanes<T>; ++l) lanes[l] += a[e + l] * b[e + l];
  }
  T sum = 0;
  for (; e < d; ++e) sum += a[e] * b[e];
  for (int64_t l = 0; l < kLanes<T>; ++l) sum += lanes[l];
  return sum;
}

// out = c * a
template <typename T>
SHC_INLINE void scale(T* __restrict out, T c, const T* __restrict a, int64_t d) {
  for (int64_t e = 0; e < d; ++e) out[e] = c * a[e];
}

// out += c * a
template <typename T>
SHC_INLINE void axpy(T* __restrict out, T c, const T* __restrict a, int64_t d) {
  for (int64_t e = 0; e < d; ++e) out[e] += c * a[e];
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
    const T* xt = x + t * k * d;
    const T* p = pre + t * k;
    T* ut = u + t * d;
    scale(ut, p[0], xt, d);
    for (int64_t j = 1; j < k; ++j) axpy(ut, p[j], xt + j * d, d);
  }
}

template <typename T>
SHC_VECTORISED void read_backward_tokens(int64_t begin, int64_t end, int64_t k, int64_t d,
                                         const T* du, const T* x, const T* pre, T* dx, T* dpre) {
  for (int64_t t = begin; t < end; ++t) {
    const T* dut = du + t * d;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t row = (t * k + j) * d;
      scale(dx + row, pre[t * k + j], dut, d);
      dpre[t * k + j] = dot(dut, x + row, d);
    }
  }
}

template <typename T>
SHC_VECTORISED void write_tokens(int64_t begin, int64_t end, int64_t m, int64_t k, int64_t d,
                                 const T* x, const T* res, const T* post, const T* y, T* out) {
  for (int64_t t = begin; t < end; ++t) {
    const T* xt = x + t * k * d;
    for (int64_t i = 0; i < m; ++i) {
      T* o = out + (t * m + i) * d;
      const T* r = res + (t * m + i) * k;
      scale(o, post[t * m + i], y + t * d, d);
      for (int64_t j = 0; j < k; ++j) axpy(o, r[j], xt + j * d, d);
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
    for (int64_t j = 0; j < k; ++j) {
      T* dxj = dx + (t * k + j) * d;
      scale(dxj, r[j], gt, d);
      for (int64_t i = 1; i < m; ++i) axpy(dxj, r[i * k + j], gt + i * d, d);
    }
    T* dyt = dy + t * d;
    scale(dyt, post[t * m], gt, d);
    for (int64_t i = 1; i < m; ++i) axpy(dyt, post[t * m + i], gt + i * d, d);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < k; ++j) dres[(t * m + i) * k + j] = dot(gt + i * d, xt + j * d, d);
      dpost[t * m + i] = dot(gt + i * d, yt, d);
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
                                   const at::Tensor& pre) {
  check_state(x);
  const int64_t n = x.size(0), k = x.size(1), d = x.size(2);
  check_operand(pre, x, {n, k}, "pre");
  check_operand(grad_u, x, {n, d}, "grad_u");
  ReadGradients g{at::empty_like(x), at::empty_like(pre)};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_read_backward", [&] {
    at::parallel_for(0, n, grain(k * d), [&](int64_t b, int64_t e) {
      read_backward_tokens<scalar_t>(b, e, k, d, grad_u.const_data_ptr<scalar_t>(),
                                     x.const_data_ptr<scalar_t>(), pre.const_data_ptr<scalar_t>(),
                                     g.x.mutable_data_ptr<scalar_t>(),
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
                                     const at::Tensor& y) {
  const auto shape = check_write_operands(x, res, post, y);
  const int64_t n = shape.n, k = shape.k, d = shape.d, m = shape.m;
  check_operand(grad_out, x, {n, m, d}, "grad_out");
  WriteGradients g{at::empty_like(x), at::empty_like(res), at::empty_like(post), at::empty_like(y)};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "stream_write_backward", [&] {
    at::parallel_for(0, n, grain((2 * m + k + 1) * d), [&](int64_t b, int64_t e) {
      write_backward_tokens<scalar_t>(
          b, e, m, k, d, grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
          res.const_data_ptr<scalar_t>(), post.const_data_ptr<scalar_t>(),
          y.const_data_ptr<scalar_t>(), g.x.mutable_data_ptr<scalar_t>(),
          g.res.mutable_data_ptr<scalar_t>(), g.post.mutable_data_ptr<scalar_t>(),
          g.y.mutable_data_ptr<scalar_t>());
    });
  });
  return g;
}

}  // namespace shc::kernels
