#include "rms_norm.h"

#include <torch/torch.h>

namespace shc {

torch::Tensor rms_normalize(const torch::Tensor& x, double eps) {
  auto xf = x.to(torch::kFloat);
  return xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return (rms_normalize(x, eps_) * weight.to(torch::kFloat)).to(x.scalar_type());
}

}  // namespace shc
