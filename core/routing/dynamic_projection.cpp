#include "dynamic_projection.h"

#include <torch/torch.h>

namespace shc {

DynamicProjectionImpl::DynamicProjectionImpl(int64_t in_features, int64_t out_features,
                                             double init_scale, ProjectionActivation activation,
                                             torch::Tensor bias_init)
    : activation_(activation) {
  weight = register_parameter("weight", torch::zeros({out_features, in_features}));
  bias = register_parameter(
      "bias", bias_init.defined() ? bias_init.to(torch::kFloat).clone().reshape({out_features})
                                  : torch::zeros({out_features}));
  scale = register_parameter("scale", torch::full({1}, init_scale));
}

torch::Tensor DynamicProjectionImpl::finish(const torch::Tensor& raw) const {
  auto act = activation_ == ProjectionActivation::kTanh ? torch::tanh(raw) : raw;
  return bias + scale * act;
}

torch::Tensor DynamicProjectionImpl::forward(const torch::Tensor& x) {
  return finish(torch::matmul(x, weight.t()));
}

std::vector<torch::Tensor> fused_raw_projections(
    const torch::Tensor& x, const std::vector<DynamicProjection>& projections) {
  std::vector<torch::Tensor> weights;
  std::vector<int64_t> sizes;
  for (const auto& p : projections) {
    weights.push_back(p->weight);
    sizes.push_back(p->out_features());
  }
  auto raw = torch::matmul(x, torch::cat(weights, 0).t());
  return raw.split_with_sizes(sizes, -1);
}

}  // namespace shc
