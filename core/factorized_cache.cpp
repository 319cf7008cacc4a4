#include "factorized_cache.h"

#include <torch/torch.h>

#include "precision.h"

#include <cmath>

namespace shc {

namespace {

// Normalised Helmert basis: column 0 = 1/sqrt(n); column j >= 1 = (1, .., 1, -j, 0, ..) /
// sqrt(j(j+1)) with j ones. Orthonormal, and deterministic (no RNG needed to build it). Built in
// fp64 so that an fp64 model's basis is orthonormal to round-off: the stream kernels rely on
// |U C| = |C| (hyper_connection.cpp).
torch::Tensor helmert_columns(int64_t n, int64_t r) {
  auto h = torch::zeros({n, r}, torch::kDouble);
  auto a = h.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) a[i][0] = 1.0 / std::sqrt(double(n));
  for (int64_t j = 1; j < r; ++j) {
    const double norm = std::sqrt(double(j) * double(j + 1));
    for (int64_t i = 0; i < j; ++i) a[i][j] = 1.0 / norm;
    a[j][j] = -double(j) / norm;
  }
  return h;
}

}  // namespace

FactorizedKVCacheImpl::FactorizedKVCacheImpl(int64_t n, int64_t d, int64_t r)
    : n_(n), d_(d), r_(r) {
  TORCH_CHECK(r >= 1 && r <= n, "FactorizedKVCache: rank r (", r, ") must be in [1, n = ", n, "]");
  // Starts exactly at U_0 (A = 0); the rotation is learned from there.
  rotation = register_module("rotation", CayleyTransform(n, 1, /*init_scale=*/0.0));
  initial_basis_ = register_buffer("initial_basis", helmert_columns(n, r));
}

torch::Tensor FactorizedKVCacheImpl::basis() {
  FullPrecisionScope full_precision;
  auto q = rotation()[0];
  // Normally a no-op (the buffer moved with the module); moved in place once otherwise.
  if (initial_basis_.device() != q.device()) {
    initial_basis_.set_data(initial_basis_.to(q.device()));
  }
  return torch::matmul(q, initial_basis_.to(q.scalar_type()));
}

torch::Tensor FactorizedKVCacheImpl::compress(const torch::Tensor& x_bar) {
  TORCH_CHECK(x_bar.size(-2) == n_ && x_bar.size(-1) == d_,
              "FactorizedKVCache::compress: expected (..., ", n_, ", ", d_, "), got ",
              x_bar.sizes());
  FullPrecisionScope full_precision;
  return torch::matmul(basis().t().to(x_bar.scalar_type()), x_bar);
}

torch::Tensor FactorizedKVCacheImpl::decompress(const torch::Tensor& c) {
  FullPrecisionScope full_precision;
  return torch::matmul(basis().to(c.scalar_type()), c);
}

torch::Tensor FactorizedKVCacheImpl::reconstruction_error(const torch::Tensor& x_bar) {
  auto x = at_least_fp32(x_bar);
  auto diff = x - decompress(compress(x));
  return diff.pow(2).sum() / x.pow(2).sum().clamp_min(1e-30);
}

}  // namespace shc
