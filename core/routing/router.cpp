#include "router.h"

#include <torch/torch.h>

#include "hc_router.h"
#include "history_router.h"
#include "mhc_router.h"
#include "shc_router.h"

namespace shc {

torch::Tensor depth_one_hot(int64_t n, int64_t depth) {
  auto e = torch::zeros({n});
  e[depth % n] = 1.0;
  return e;
}

torch::Tensor depth_read_logits(int64_t n, int64_t depth) {
  constexpr double kReadLogit = 3.0;
  return (2 * depth_one_hot(n, depth) - 1) * kReadLogit;
}

std::shared_ptr<RouterImpl> make_router(const ModelConfig& cfg, int64_t depth) {
  switch (cfg.residual) {
    case ResidualKind::kResidual:
      return nullptr;
    case ResidualKind::kHC:
      return std::make_shared<HCRouterImpl>(cfg, depth);
    case ResidualKind::kMHC:
      return std::make_shared<MHCRouterImpl>(cfg, depth);
    case ResidualKind::kSHC:
      return std::make_shared<SHCRouterImpl>(cfg, depth);
    case ResidualKind::kHistory:
      return std::make_shared<HistoryRouterImpl>(cfg, depth);
  }
  return nullptr;
}

}  // namespace shc
