#include "sparse_mixture.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "precision.h"
#include "stream_kernels.h"

namespace shc {

torch::Tensor sparse_softmax(const torch::Tensor& logits, int64_t top_k) {
  if (top_k >= logits.size(-1)) return torch::softmax(logits, -1);
  auto kept = std::get<1>(logits.topk(top_k, -1));
  auto masked = torch::full_like(logits, -std::numeric_limits<float>::infinity())
                    .scatter(-1, kept, logits.gather(-1, kept));
  return torch::softmax(masked, -1);
}

torch::Tensor mix_bases(const torch::Tensor& alpha, const torch::Tensor& bases) {
  const auto n = bases.size(-1);
  auto shape = alpha.sizes().vec();
  shape.back() = n;
  shape.push_back(n);
  return torch::matmul(alpha, bases.reshape({bases.size(0), n * n}).to(alpha.scalar_type()))
      .view(shape);
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per token: alpha = softmax over the top_k largest of the K logits (0 elsewhere), and
// H = sum_k alpha_k Q_k over the kept k in index order (nn = n * n values per basis).
template <typename T>
void mix_tokens(int64_t begin, int64_t end, int64_t k_bases, int64_t top_k, int64_t nn,
                const T* logits, const T* bases, T* alpha, T* h) {
  for (int64_t t = begin; t < end; ++t) {
    const T* z = logits + t * k_bases;
    T* a = alpha + t * k_bases;
    // Selection: a[k] = 1 marks a kept logit; the largest not yet kept, the lower index on ties.
    std::fill(a, a + k_bases, T(0));
    T largest = -std::numeric_limits<T>::infinity();
    for (int64_t s = 0; s < top_k; ++s) {
      int64_t best = -1;
      for (int64_t k = 0; k < k_bases; ++k) {
        if (a[k] == 0 && (best < 0 || z[k] > z[best])) best = k;
      }
      a[best] = 1;
      if (s == 0) largest = z[best];
    }
    T sum = 0;
    for (int64_t k = 0; k < k_bases; ++k) {
      if (a[k] != 0) sum += (a[k] = std::exp(z[k] - largest));
    }
    T* ht = h + t * nn;
    std::fill(ht, ht + nn, T(0));
    for (int64_t k = 0; k < k_bases; ++k) {
      if (a[k] == 0) continue;
      a[k] /= sum;
      const T* q = bases + k * nn;
      for (int64_t e = 0; e < nn; ++e) ht[e] += a[k] * q[e];
    }
  }
}

// d logits for each token: g_k = dalpha_k + <dH, Q_k>, then the softmax's backward
// alpha_k (g_k - sum_j alpha_j g_j), which is 0 where alpha_k = 0 (a dropped logit).
template <typename T>
void mix_backward_tokens(int64_t begin, int64_t end, int64_t k_bases, int64_t nn, const T* grad_h,
                         const T* grad_alpha, const T* bases, const T* alpha, T* grad_logits) {
  for (int64_t t = begin; t < end; ++t) {
    const T* a = alpha + t * k_bases;
    const T* gh = grad_h ? grad_h + t * nn : nullptr;
    T* g = grad_logits + t * k_bases;
    T mean = 0;
    for (int64_t k = 0; k < k_bases; ++k) {
      T gk = grad_alpha ? grad_alpha[t * k_bases + k] : T(0);
      if (gh && a[k] != 0) {
        const T* q = bases + k * nn;
        for (int64_t e = 0; e < nn; ++e) gk += gh[e] * q[e];
      }
      g[k] = gk;
      mean += a[k] * gk;
    }
    for (int64_t k = 0; k < k_bases; ++k) g[k] = a[k] * (g[k] - mean);
  }
}

// Tokens per parallel task: a token's work runs over every basis's n x n values (forward: the
// mixture; backward: <dH, Q_k>), so K * n * n values per token.
int64_t mix_grain(int64_t k_bases, int64_t nn) {
  return kernels::grain(k_bases * nn);
}

// Outputs alpha (..., K) and H_res (..., n, n); saves alpha (an output) and the bases in the
// logits' dtype. dQ = alpha^T dH is one GEMM over the tokens.
struct FusedSparseMixing : torch::autograd::Function<FusedSparseMixing> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& logits, int64_t top_k,
                               const torch::Tensor& bases) {
    const int64_t k_bases = bases.size(0), n = bases.size(-1), nn = n * n;
    auto z = logits.reshape({-1, k_bases}).contiguous();
    auto q = bases.to(logits.scalar_type()).contiguous();
    const int64_t tokens = z.size(0);
    auto alpha = torch::empty_like(z);
    auto h = torch::empty({tokens, n, n}, z.options());
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "sparse_mix", [&] {
      at::parallel_for(0, tokens, mix_grain(k_bases, nn), [&](int64_t b, int64_t e) {
        mix_tokens<scalar_t>(b, e, k_bases, top_k, nn, z.const_data_ptr<scalar_t>(),
                             q.const_data_ptr<scalar_t>(), alpha.mutable_data_ptr<scalar_t>(),
                             h.mutable_data_ptr<scalar_t>());
      });
    });
    auto res_shape = logits.sizes().vec();
    res_shape.back() = n;
    res_shape.push_back(n);
    auto alpha_out = alpha.view(logits.sizes());
    ctx->save_for_backward({alpha_out, q});
    // An output no loss reached arrives undefined, not as zeros: the kernel skips its term.
    ctx->set_materialize_grads(false);
    return {alpha_out, h.view(res_shape)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &alpha_out = saved[0], &q = saved[1];
    const int64_t k_bases = q.size(0), nn = q.size(1) * q.size(2);
    const auto alpha = alpha_out.view({-1, k_bases});
    const int64_t tokens = alpha.size(0);
    auto grad_alpha =
        grads[0].defined() ? grads[0].reshape({tokens, k_bases}).contiguous() : torch::Tensor();
    auto grad_h =
        grads[1].defined() ? grads[1].reshape({tokens, nn}).contiguous() : torch::Tensor();
    auto grad_logits = torch::empty_like(alpha);
    AT_DISPATCH_FLOATING_TYPES(alpha.scalar_type(), "sparse_mix_backward", [&] {
      auto ptr = [](const torch::Tensor& t) {
        return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
      };
      at::parallel_for(0, tokens, mix_grain(k_bases, nn), [&](int64_t b, int64_t e) {
        mix_backward_tokens<scalar_t>(b, e, k_bases, nn, ptr(grad_h), ptr(grad_alpha), ptr(q),
                                      ptr(alpha), grad_logits.mutable_data_ptr<scalar_t>());
      });
    });
    // needs_input_grad counts tensor inputs only: the bases are the second. The engine casts the
    // gradient to the bases' own dtype.
    torch::Tensor grad_bases;
    if (ctx->needs_input_grad(1) && grad_h.defined()) {
      grad_bases = at::mm(alpha.t(), grad_h).view(q.sizes());
    }
    return {grad_logits.view(alpha_out.sizes()), torch::Tensor(), grad_bases};
  }
};

}  // namespace

SparseMixing sparse_mix(const torch::Tensor& logits, int64_t top_k, const torch::Tensor& bases,
                        StreamOps ops) {
  TORCH_CHECK(bases.dim() == 3 && bases.size(1) == bases.size(2) &&
                  logits.size(-1) == bases.size(0) && top_k >= 1,
              "sparse_mix: logits (..., K) and bases (K, n, n) with top_k >= 1, got ",
              logits.sizes(), ", ", bases.sizes(), " and top_k ", top_k);
  if (fused_kernels_apply(logits, ops) && logits.numel() > 0) {
    auto out = FusedSparseMixing::apply(logits, std::min(top_k, logits.size(-1)), bases);
    return {out[0], out[1]};
  }
  auto alpha = sparse_softmax(logits, top_k);
  return {alpha, mix_bases(alpha, bases)};
}

SparseOrthogonalMixtureImpl::SparseOrthogonalMixtureImpl(int64_t n, int64_t k, int64_t hidden_dim,
                                                         int64_t top_k, double init_scale)
    : top_k_(top_k) {
  TORCH_CHECK(top_k >= 1 && top_k <= k, "SparseOrthogonalMixture: top_k (", top_k,
              ") must be between 1 and k (", k, ")");
  bases = register_module("bases", CayleyTransform(n, k, init_scale));
  logits = register_module("logits", DynamicProjection(hidden_dim, k, init_scale));
}

torch::Tensor SparseOrthogonalMixtureImpl::mixture_weights(const torch::Tensor& x) {
  return sparse_softmax(logits(at_least_fp32(x)), top_k_);
}

torch::Tensor SparseOrthogonalMixtureImpl::mix_logits(const torch::Tensor& l, StreamOps ops) {
  return sparse_mix(l, top_k_, bases(), ops).res;
}

torch::Tensor SparseOrthogonalMixtureImpl::forward(const torch::Tensor& x) {
  return mix_logits(logits(at_least_fp32(x)));
}

torch::Tensor SparseOrthogonalMixtureImpl::get_spectral_norm(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return torch::linalg_matrix_norm(forward(x), 2);
}

}  // namespace shc
