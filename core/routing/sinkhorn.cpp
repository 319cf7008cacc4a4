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

namespace shc {
namespace {

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

// One normalisation step of a token's n x n matrix along rows (stride 1 within a line, lines n
// apart) or columns (stride n, lines 1 apart): l -= logsumexp(line) on the log matrix l, and
// p = exp(l) = softmax(line), which is also the step's weights for backward. The log-sum-exp comes
// from p, the previous step's softmax, at the cost of one log per line: log(sum p). Only where a
// whole line of p has fallen below sqrt(smallest normal) (logits spread over ~80 in fp32), so that
// its sum would lose precision or underflow, is it formed from l in the stable way,
// m + log(sum exp(l - m)); l is exact either way, so no row or column is ever lost.
template <typename T>
void normalise(T* l, T* p, int64_t n, int64_t stride, int64_t line_step, T* e) {
  const T safe = std::sqrt(std::numeric_limits<T>::min());
  for (int64_t a = 0; a < n; ++a) {
    T* line = l + a * line_step;
    T* prob = p + a * line_step;
    T largest = prob[0];
    for (int64_t b = 1; b < n; ++b) largest = std::max(largest, prob[b * stride]);
    T sum = 0, lse;
    if (largest >= safe) {
      for (int64_t b = 0; b < n; ++b) sum += (e[b] = prob[b * stride]);
      lse = std::log(sum);
    } else {
      T m = line[0];
      for (int64_t b = 1; b < n; ++b) m = std::max(m, line[b * stride]);
      for (int64_t b = 0; b < n; ++b) sum += (e[b] = std::exp(line[b * stride] - m));
      lse = m + std::log(sum);
    }
    for (int64_t b = 0; b < n; ++b) {
      line[b * stride] -= lse;
      prob[b * stride] = e[b] / sum;
    }
  }
}

// Per token: out = exp(l) after the rounds; weights (2 iters, n, n) the softmax of every step.
template <typename T>
void sinkhorn_tokens(int64_t begin, int64_t end, int64_t n, int64_t iters, const T* logits, T* out,
                     T* weights) {
  const int64_t nn = n * n;
  std::vector<T> l(nn), e(n);
  for (int64_t t = begin; t < end; ++t) {
    T* p = out + t * nn;  // exp(l), kept up to date by every step
    const T* in = logits + t * nn;
    const T max = *std::max_element(in, in + nn);
    for (int64_t i = 0; i < nn; ++i) {
      l[i] = in[i] - max;
      p[i] = std::exp(l[i]);
    }
    T* w = weights + t * 2 * iters * nn;
    for (int64_t r = 0; r < iters; ++r) {
      normalise(l.data(), p, n, 1, n, e.data());
      std::copy(p, p + nn, w + (2 * r) * nn);
      normalise(l.data(), p, n, n, 1, e.data());
      std::copy(p, p + nn, w + (2 * r + 1) * nn);
    }
  }
}

// Backward of sinkhorn_tokens: dl = dout * out, then through each step in reverse
// (dl -= weights * sum over the step's line of dl), then through the max subtraction (its
// gradient goes to the maximal entries, shared equally among ties, as LibTorch's amax does).
template <typename T>
void sinkhorn_backward_tokens(int64_t begin, int64_t end, int64_t n, int64_t iters, const T* logits,
                              const T* out, const T* weights, const T* grad_out, T* grad_logits) {
  const int64_t nn = n * n;
  for (int64_t t = begin; t < end; ++t) {
    T* dl = grad_logits + t * nn;
    for (int64_t i = 0; i < nn; ++i) dl[i] = grad_out[t * nn + i] * out[t * nn + i];
    const T* w = weights + t * 2 * iters * nn;
    for (int64_t s = 2 * iters - 1; s >= 0; --s) {
      const bool rows = s % 2 == 0;
      const int64_t stride = rows ? 1 : n, line_step = rows ? n : 1;
      for (int64_t a = 0; a < n; ++a) {
        T sum = 0;
        for (int64_t b = 0; b < n; ++b) sum += dl[a * line_step + b * stride];
        for (int64_t b = 0; b < n; ++b) {
          dl[a * line_step + b * stride] -= w[s * nn + a * line_step + b * stride] * sum;
        }
      }
    }
    const T* in = logits + t * nn;
    const T max = *std::max_element(in, in + nn);
    T total = 0;
    int64_t ties = 0;
    for (int64_t i = 0; i < nn; ++i) {
      total += dl[i];
      ties += in[i] == max;
    }
    for (int64_t i = 0; i < nn; ++i) {
      if (in[i] == max) dl[i] -= total / static_cast<T>(ties);
    }
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
    auto weights = torch::empty({tokens, 2 * iters, n, n}, in.options());
    AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sinkhorn", [&] {
      at::parallel_for(0, tokens, sinkhorn_grain(n, iters), [&](int64_t b, int64_t e) {
        sinkhorn_tokens<scalar_t>(b, e, n, iters, in.const_data_ptr<scalar_t>(),
                                  out.mutable_data_ptr<scalar_t>(),
                                  weights.mutable_data_ptr<scalar_t>());
      });
    });
    ctx->save_for_backward({in, out, weights});
    ctx->saved_data["iters"] = iters;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &in = saved[0], &out = saved[1], &weights = saved[2];
    const int64_t iters = ctx->saved_data["iters"].toInt(), n = in.size(-1);
    const int64_t tokens = in.numel() / (n * n);
    auto grad_out = grads[0].contiguous();
    auto grad = torch::empty_like(in);
    AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sinkhorn_backward", [&] {
      at::parallel_for(0, tokens, sinkhorn_grain(n, iters), [&](int64_t b, int64_t e) {
        sinkhorn_backward_tokens<scalar_t>(
            b, e, n, iters, in.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(),
            weights.const_data_ptr<scalar_t>(), grad_out.const_data_ptr<scalar_t>(),
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
  auto l = at_least_fp32(logits);
  if (fused_kernels_apply(l, ops) && l.numel() > 0) {
    return FusedSinkhorn::apply(l, iters);
  }
  return composed_sinkhorn(l, iters);
}

}  // namespace shc
