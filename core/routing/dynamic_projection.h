// Per-token coefficient projection shared by the hyper-connection routers:
//   out = bias + scale * act(x W^T)
// W starts at zero and scale at a small value (~0.01), so every router starts at its static
// (bias) matrices and the dynamic part grows from there (HC paper, "dynamic" connections).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <vector>

namespace shc {

enum class ProjectionActivation { kIdentity, kTanh };

class DynamicProjectionImpl : public torch::nn::Module {
 public:
  // `bias_init` (out) sets the static part; undefined means zeros.
  DynamicProjectionImpl(int64_t in_features, int64_t out_features, double init_scale,
                        ProjectionActivation activation = ProjectionActivation::kIdentity,
                        torch::Tensor bias_init = {});
  torch::Tensor forward(const torch::Tensor& x);
  // bias + scale * act(raw), where raw = x W^T was computed elsewhere (see stacked_weight).
  torch::Tensor finish(const torch::Tensor& raw) const;

  int64_t out_features() const { return weight.size(0); }

  torch::Tensor weight;  // (out, in), zero at init
  torch::Tensor bias;    // (out)
  torch::Tensor scale;   // (1)

 private:
  ProjectionActivation activation_;
};
TORCH_MODULE(DynamicProjection);

// Several projections of the same input as one GEMM (the input is the n*d stream state, so reading
// it once matters): their weights stacked into one (sum of outputs, in) matrix ...
torch::Tensor stacked_weight(const std::vector<DynamicProjection>& projections);
// ... and the product x W^T of the stacked weight split back into each projection's raw part;
// finish() each part to get the projection.
std::vector<torch::Tensor> split_projected(const torch::Tensor& raw,
                                           const std::vector<DynamicProjection>& projections);

}  // namespace shc
