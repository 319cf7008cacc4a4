#include "rms_norm.h"

#include <torch/torch.h>

#include "precision.h"

namespace shc {

torch::Tensor rms_normalize(const torch::Tensor& x, double eps) {
  auto xf = at_least_fp32(x);
  return xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  auto y = rms_normalize(x, eps_);
  return (y * weight.to(y.scalar_type())).to(x.scalar_type());
}

}  // namespace shc
