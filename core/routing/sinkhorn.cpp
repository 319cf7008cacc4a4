#include "sinkhorn.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../precision.h"
#include "../stream_kernels.h"
#include "../vector_lanes.h"

namespace shc {
namespace {

using kernels::kLanes;
using kernels::Vec;

torch::Tensor composed_sinkhorn(const torch::Tensor& logits, int64_t iters) {
  // Log domain: each round subtracts the row, then the column, log-sum-exp from the log matrix,
  // i.e. divides exp(l) by its row and column sums without ever forming exp(l) alone. A linear-
  // domain iteration from exp(l - max) loses whole rows or columns to underflow once the logits
  // spread over ~100 (exp(-104) = 0 in fp32) and can never bring them back; here every row and
  // column keeps a finite log-sum, so the result stays doubly stochastic.
  auto l = logits - logits.amax({-2, -1}, /*keepdim=*/true);  // keeps exp() finite when iters = 0
  for (int64_t i = 0; i < iters; ++i) {
    l = l - l.logsumexp(-1, /*keepdim=*/true);
    l = l - l.logsumexp(-2, /*keepdim=*/true);
  }
  return l.exp();
}

// The kernel runs kLanes<T> tokens side by side, one per vector lane (16 in fp32), so each step of
// the rounds is a few vector operations for all of them; a token's arithmetic is the same whatever
// its neighbours, so results do not depend on how tokens fall into blocks or threads.
//
// Per token and step, a line (row or column) of p = exp(l) is divided by its sum: p is the
// softmax of the line of the log matrix l, and the step's weights for backward. l itself moves by
// the line's log-sum-exp, log(sum p), but it is needed only where a whole line of p has fallen
// below sqrt(smallest normal) (logits spread over ~80 in fp32), so that its sum would lose
// precision or underflow; there the line is formed again from l in the stable way,
// m + log(sum exp(l - m)), and no row or column is ever lost. So l is kept as l0 - R_i - C_j: the
// initial log matrix and a log offset per row and column, each held as log_offset +
// log(prod_offset), where prod_offset multiplies the line sums and is folded into log_offset only
// when it leaves [sqrt(safe), 1/sqrt(safe)]: a log per line per step would cost more than the rest
// of the round.

// Vectors of lanes in a plain buffer (a std::vector of a vector type would drop its alignment
// attribute).
template <typename T>
class LaneArray {
 public:
  explicit LaneArray(int64_t size) : values_(size * kLanes<T>) {}
  Vec<T>& operator[](int64_t i) { return *reinterpret_cast<Vec<T>*>(&values_[i * kLanes<T>]); }
  const Vec<T>& operator[](int64_t i) const {
    return *reinterpret_cast<const Vec<T>*>(&values_[i * kLanes<T>]);
  }
  void fill(T value) { std::fill(values_.begin(), values_.end(), value); }
  // Vectors [0, count) copied to vectors [at, at + count) of `dst`.
  void copy_to(LaneArray& dst, int64_t at, int64_t count) const {
    std::copy(values_.begin(), values_.begin() + count * kLanes<T>,
              dst.values_.begin() + at * kLanes<T>);
  }

 private:
  std::vector<T> values_;
};

template <typename T>
struct SinkhornBlock {
  SinkhornBlock(int64_t n, int64_t steps)
      : n(n),
        in(n * n),
        l0(n * n),
        p(n * n),
        max(1),
        log_offset(2 * n),
        prod_offset(2 * n),
        weights(steps * n * n),
        line(n) {}

  // Entry c of line a in a row step (a's row) or a column step (a's column).
  int64_t entry(bool rows, int64_t a, int64_t c) const { return rows ? a * n + c : c * n + a; }

  int64_t n;
  LaneArray<T> in;           // (n, n) the logits
  LaneArray<T> l0, p;        // (n, n) logits - max, and exp(l)
  LaneArray<T> max;          // (1) each token's largest logit
  LaneArray<T> log_offset;   // (2n) rows then columns: R or C = log_offset + log(prod)
  LaneArray<T> prod_offset;  // (2n)
  LaneArray<T> weights;      // (steps, n, n) p after each step, for backward
  std::vector<T> line;       // (n) one token's line on the stable path
};

template <typename T>
T safe_probability() {
  return std::sqrt(std::numeric_limits<T>::min());
}

// Loads tokens [begin, begin + count) of `src` (N, n, n) into the lanes of `dst` (n, n); the lanes
// past `count` hold zeros (a uniform matrix: finite, and never stored back).
template <typename T>
void gather(const T* src, int64_t begin, int64_t count, int64_t nn, LaneArray<T>& dst) {
  for (int64_t i = 0; i < nn; ++i) {
    for (int64_t lane = 0; lane < kLanes<T>; ++lane) {
      dst[i][lane] = lane < count ? src[(begin + lane) * nn + i] : T(0);
    }
  }
}

template <typename T>
void scatter(const LaneArray<T>& src, int64_t begin, int64_t count, int64_t nn, T* dst) {
  for (int64_t i = 0; i < nn; ++i) {
    for (int64_t lane = 0; lane < count; ++lane) dst[(begin + lane) * nn + i] = src[i][lane];
  }
}

// Line a of the step, for the one token in `lane` whose line has underflowed: formed again from
// l = l0 - R - C with the stable log-sum-exp, which moves the line's own log offset.
template <typename T>
void stable_line(SinkhornBlock<T>& b, bool rows, int64_t a, int64_t lane) {
  const int64_t n = b.n;
  auto offset = [&](int64_t k) { return b.log_offset[k][lane] + std::log(b.prod_offset[k][lane]); };
  std::vector<T>& l = b.line;
  for (int64_t c = 0; c < n; ++c) {
    const int64_t row = rows ? a : c, col = rows ? c : a;
    l[c] = b.l0[b.entry(rows, a, c)][lane] - offset(row) - offset(n + col);
  }
  const T m = *std::max_element(l.begin(), l.end());
  T sum = 0;
  for (int64_t c = 0; c < n; ++c) sum += (l[c] = std::exp(l[c] - m));
  for (int64_t c = 0; c < n; ++c) b.p[b.entry(rows, a, c)][lane] = l[c] / sum;
  b.log_offset[rows ? a : n + a][lane] += m + std::log(sum);
}

// The rounds on a block whose `in` is loaded: p ends as exp(l) after them; with keep_weights each
// step's p is kept for backward.
template <typename T>
SHC_VECTORISED void block_rounds(SinkhornBlock<T>& b, int64_t iters, bool keep_weights) {
  const int64_t n = b.n, nn = n * n;
  const T safe = safe_probability<T>(), fold_low = std::sqrt(safe), fold_high = 1 / fold_low;
  Vec<T>& max = b.max[0];
  max = b.in[0];
  for (int64_t i = 1; i < nn; ++i) max = b.in[i] > max ? b.in[i] : max;
  for (int64_t i = 0; i < nn; ++i) {
    b.l0[i] = b.in[i] - max;
    for (int64_t lane = 0; lane < kLanes<T>; ++lane) b.p[i][lane] = std::exp(b.l0[i][lane]);
  }
  b.log_offset.fill(0);
  b.prod_offset.fill(1);
  for (int64_t s = 0; s < 2 * iters; ++s) {
    const bool rows = s % 2 == 0;
    for (int64_t a = 0; a < n; ++a) {
      Vec<T> largest = b.p[b.entry(rows, a, 0)], sum = {};
      for (int64_t c = 0; c < n; ++c) {
        const Vec<T> v = b.p[b.entry(rows, a, c)];
        largest = v > largest ? v : largest;
        sum += v;
      }
      Vec<T>& prod = b.prod_offset[rows ? a : n + a];
      const Vec<T> before = prod, inverse = T(1) / sum;
      for (int64_t c = 0; c < n; ++c) b.p[b.entry(rows, a, c)] *= inverse;
      prod *= sum;
      // Rare: an underflowed line, or a product to fold (lane by lane).
      if (kernels::lane_min<T>(largest) >= safe && kernels::lane_min<T>(prod) >= fold_low &&
          kernels::lane_max<T>(prod) <= fold_high) {
        continue;
      }
      for (int64_t lane = 0; lane < kLanes<T>; ++lane) {
        if (!(largest[lane] >= safe)) {
          prod[lane] = before[lane];
          stable_line(b, rows, a, lane);
        } else if (prod[lane] < fold_low || prod[lane] > fold_high) {
          b.log_offset[rows ? a : n + a][lane] += std::log(prod[lane]);
          prod[lane] = 1;
        }
      }
    }
    if (keep_weights) b.p.copy_to(b.weights, s * nn, nn);
  }
}

// Forward for tokens [begin, end): out = exp(l) after the rounds.
template <typename T>
void sinkhorn_tokens(int64_t begin, int64_t end, int64_t n, int64_t iters, const T* logits,
                     T* out) {
  SinkhornBlock<T> b(n, 0);
  for (int64_t t = begin; t < end; t += kLanes<T>) {
    const int64_t count = std::min(kLanes<T>, end - t);
    gather(logits, t, count, n * n, b.in);
    block_rounds(b, iters, /*keep_weights=*/false);
    scatter(b.p, t, count, n * n, out);
  }
}

// Backward for tokens [begin, end): the rounds again, keeping each step's weights for the block
// only (40 KB at n = 4 and 20 rounds in fp32, where saving them in forward would keep
// 2 * iters * n * n values per token alive until backward), then dl = dout * out, then through each
// step in reverse (dl -= weights * sum over the step's line of dl), then through the max
// subtraction (its gradient goes to the maximal entries, shared equally among ties, as LibTorch's
// amax does).
template <typename T>
SHC_VECTORISED void sinkhorn_backward_tokens(int64_t begin, int64_t end, int64_t n, int64_t iters,
                                             const T* logits, const T* grad_out, T* grad_logits) {
  const int64_t nn = n * n;
  SinkhornBlock<T> b(n, 2 * iters);
  LaneArray<T> dl(nn);
  for (int64_t t = begin; t < end; t += kLanes<T>) {
    const int64_t count = std::min(kLanes<T>, end - t);
    gather(logits, t, count, nn, b.in);
    block_rounds(b, iters, /*keep_weights=*/true);
    gather(grad_out, t, count, nn, dl);
    for (int64_t i = 0; i < nn; ++i) dl[i] *= b.p[i];
    for (int64_t s = 2 * iters - 1; s >= 0; --s) {
      const bool rows = s % 2 == 0;
      const int64_t w = s * nn;
      for (int64_t a = 0; a < n; ++a) {
        Vec<T> sum = {};
        for (int64_t c = 0; c < n; ++c) sum += dl[b.entry(rows, a, c)];
        for (int64_t c = 0; c < n; ++c)
          dl[b.entry(rows, a, c)] -= b.weights[w + b.entry(rows, a, c)] * sum;
      }
    }
    const Vec<T> max = b.max[0];
    Vec<T> total = {}, ties = {};
    for (int64_t i = 0; i < nn; ++i) {
      total += dl[i];
      ties += b.in[i] == max ? Vec<T>{} + T(1) : Vec<T>{};
    }
    const Vec<T> share = total / ties;
    for (int64_t i = 0; i < nn; ++i) dl[i] = b.in[i] == max ? dl[i] - share : dl[i];
    scatter(dl, t, count, nn, grad_logits);
  }
}

// Tokens per parallel task: a token's rounds count as two values per matrix entry each (a row and
// a column step), so a task holds ~16k entries of work.
int64_t sinkhorn_grain(int64_t n, int64_t iters) {
  return kernels::grain(2 * n * n * std::max<int64_t>(1, iters));
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct FusedSinkhorn : torch::autograd::Function<FusedSinkhorn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits, int64_t iters) {
    const int64_t n = logits.size(-1);
    auto in = logits.contiguous();
    const int64_t tokens = in.numel() / (n * n);
    auto out = torch::empty_like(in);
    AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sinkhorn", [&] {
      at::parallel_for(0, tokens, sinkhorn_grain(n, iters), [&](int64_t b, int64_t e) {
        sinkhorn_tokens<scalar_t>(b, e, n, iters, in.const_data_ptr<scalar_t>(),
                                  out.mutable_data_ptr<scalar_t>());
      });
    });
    // Only the logits: backward runs the rounds again for their weights.
    ctx->save_for_backward({in});
    ctx->saved_data["iters"] = iters;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto in = ctx->get_saved_variables()[0];
    const int64_t iters = ctx->saved_data["iters"].toInt(), n = in.size(-1);
    const int64_t tokens = in.numel() / (n * n);
    auto grad_out = grads[0].contiguous();
    auto grad = torch::empty_like(in);
    AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sinkhorn_backward", [&] {
      at::parallel_for(0, tokens, sinkhorn_grain(n, iters), [&](int64_t b, int64_t e) {
        sinkhorn_backward_tokens<scalar_t>(b, e, n, iters, in.const_data_ptr<scalar_t>(),
                                           grad_out.const_data_ptr<scalar_t>(),
                                           grad.mutable_data_ptr<scalar_t>());
      });
    });
    return {grad, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor sinkhorn_knopp(const torch::Tensor& logits, int64_t iters, StreamOps ops) {
  TORCH_CHECK(logits.dim() >= 2 && logits.size(-1) == logits.size(-2),
              "sinkhorn_knopp: logits must be (..., n, n), got ", logits.sizes());
  TORCH_CHECK(iters >= 0, "sinkhorn_knopp: iters must be >= 0, got ", iters);
  auto l = at_least_fp32(logits);
  if (fused_kernels_apply(l, ops) && l.numel() > 0) {
    return FusedSinkhorn::apply(l, iters);
  }
  return composed_sinkhorn(l, iters);
}

}  // namespace shc
