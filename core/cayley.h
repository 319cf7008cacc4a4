// Cayley transform: skew-symmetric A -> orthogonal Q = (I - A)(I + A)^-1 (SHC Eq. 9).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace shc {

// Batched Cayley transform of skew-symmetric matrices A (..., n, n). Uses a linear solve, never an
// explicit inverse: (I - A) and (I + A)^-1 commute, so Q = solve(I + A, I - A). I + A is always
// invertible for real skew-symmetric A (its eigenvalues are 1 + i*lambda), and
// det Q = det(I - A) / det(I + A) = det((I + A)^T) / det(I + A) = +1.
torch::Tensor cayley(const torch::Tensor& skew);

// k learnable orthogonal n x n matrices. Each A_i = P_i - P_i^T is built from the n(n-1)/2 free
// entries of a strict upper triangle, so Cayley(0) = I and a small init_scale starts every Q_i
// near the identity.
class CayleyTransformImpl : public torch::nn::Module {
 public:
  CayleyTransformImpl(int64_t n, int64_t k = 1, double init_scale = 0.01);
  // (k, n, n), each exactly orthogonal with det +1 (up to rounding).
  torch::Tensor forward();
  // (k, n, n) skew-symmetric generators A_i.
  torch::Tensor skew() const;

  int64_t n() const { return n_; }
  int64_t k() const { return k_; }

  // Module::to casts every buffer, integer ones included; these keep the index buffer int64 (it
  // only changes device) and cast the rest as usual.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  using torch::nn::Module::to;

  torch::Tensor upper;  // (k, n(n-1)/2) free parameters

 private:
  int64_t n_, k_;
  // Buffer "upper_index" (int64): the flat indices of the strict upper triangle of an n x n
  // matrix. It moves with the module (to(device)); a runtime that places the parameters itself
  // (FSDP's set_data) gets it moved in place once, on the first call that needs it there.
  torch::Tensor upper_index_;
};
TORCH_MODULE(CayleyTransform);

}  // namespace shc
