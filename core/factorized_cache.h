// Factorised stream state (SHC Eq. 14): x_bar (n x d) ~ U C with U (n x r) orthonormal columns and
// C = U^T x_bar (r x d). U = Cayley(A) U_0 stays orthonormal for every A; U_0 holds the first r
// columns of the normalised Helmert basis, whose first column is the stream mean direction
// 1/sqrt(n), so r = 1 starts as a (scaled) average of the streams. r = n is lossless.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "cayley.h"

namespace shc {

class FactorizedKVCacheImpl : public torch::nn::Module {
 public:
  FactorizedKVCacheImpl(int64_t n, int64_t d, int64_t r);
  // (..., n, d) -> (..., r, d)
  torch::Tensor compress(const torch::Tensor& x_bar);
  // (..., r, d) -> (..., n, d)
  torch::Tensor decompress(const torch::Tensor& c);
  // ||x - U U^T x||^2 / ||x||^2 over the whole tensor: 0 when x lies in span(U).
  torch::Tensor reconstruction_error(const torch::Tensor& x_bar);
  // (n, r) orthonormal columns.
  torch::Tensor basis();

  int64_t n() const { return n_; }
  int64_t rank() const { return r_; }

  CayleyTransform rotation{nullptr};

 private:
  int64_t n_, d_, r_;
  // Buffer "initial_basis": U_0 (n, r), fixed. Moves (and casts) with the module; a runtime that
  // places the parameters itself (FSDP's set_data) gets it moved in place once.
  torch::Tensor initial_basis_;
};
TORCH_MODULE(FactorizedKVCache);

}  // namespace shc
