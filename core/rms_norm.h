// RMSNorm (Zhang & Sennrich 2019), computed in fp32 (fp64 for fp64 input) whatever the input dtype.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace shc {

// y = x / sqrt(mean(x^2) + eps) over the last dimension, in at least fp32.
torch::Tensor rms_normalize(const torch::Tensor& x, double eps);

// RMSNorm with gain: rms_normalize(x) * weight, with x's dtype. On CPU one pass forward and one
// backward (the composed ops sweep x about five times each way and save the normalised copy);
// rms_norm_reference, the composed ops, is the reference for tests and the path on GPUs.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps);

class RMSNormImpl : public torch::nn::Module {
 public:
  explicit RMSNormImpl(int64_t dim, double eps = 1e-6);
  // Same shape and dtype as x; the statistics and the gain are applied in at least fp32.
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight;  // (dim), initialised to 1

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace shc
