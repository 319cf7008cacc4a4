// Models the tests build from test_model_config.h configs.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "core/transformer.h"

namespace shc::test {

// Moves every parameter away from its (often zero) initial value so that the dynamic routing paths
// are active: otherwise causality, caching and routing statistics would hold trivially.
inline SHCTransformer perturbed_model(const ModelConfig& cfg, uint64_t seed) {
  torch::manual_seed(seed);
  SHCTransformer m(cfg);
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.1);
  return m;
}

// A small branch for the library tests: tanh(Linear(x)), d -> d.
struct TanhLinearImpl : torch::nn::Module {
  explicit TanhLinearImpl(int64_t d) {
    linear = register_module("linear", torch::nn::Linear(d, d));
  }
  torch::Tensor forward(const torch::Tensor& x) { return torch::tanh(linear(x)); }
  torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(TanhLinear);

}  // namespace shc::test
