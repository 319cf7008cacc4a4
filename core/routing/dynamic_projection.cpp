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

torch::Tensor stacked_weight(const std::vector<DynamicProjection>& projections) {
  std::vector<torch::Tensor> weights;
  for (const auto& p : projections) weights.push_back(p->weight);
  return torch::cat(weights, 0);
}

std::vector<torch::Tensor> split_projected(const torch::Tensor& raw,
                                           const std::vector<DynamicProjection>& projections) {
  std::vector<int64_t> sizes;
  for (const auto& p : projections) sizes.push_back(p->out_features());
  return raw.split_with_sizes(sizes, -1);
}

}  // namespace shc
