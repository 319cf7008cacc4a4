// Sparse Selective Hyper-Connections (this project, SPEC §4.1-4.2):
//   H_res  = sum_{i in top-k} alpha_i(x~) Cayley(A_i)   ||H_res||_2 <= 1 by construction
//   H_pre  = sigmoid(.),  H_post = 2 sigmoid(.)
// The K Cayley bases are solved once per forward per sublayer, not per token: per token only the
// K mixing logits and a K-term combination remain.
#pragma once

#include "../sparse_mixture.h"
#include "dynamic_projection.h"
#include "router.h"

namespace shc {

class SHCRouterImpl : public ProjectionRouterImpl {
 public:
  SHCRouterImpl(const ModelConfig& cfg, int64_t depth);
  Routing route_projected(const torch::Tensor& projected) override;
  torch::Tensor residual_coefficients(const torch::Tensor& x_tilde) override;
  torch::Tensor residual_from_coefficients(const torch::Tensor& coefficients) override;

  SparseOrthogonalMixture mixture{nullptr};
  DynamicProjection pre{nullptr}, post{nullptr};
};

}  // namespace shc
