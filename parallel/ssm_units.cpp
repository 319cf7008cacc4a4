#include "parallel/ssm_units.h"

namespace shc::parallel {

ShardedModelBuilder SSMUnits::builder(SSMConfig cfg) {
  return [cfg](const UnitBuilt& on_unit) -> std::shared_ptr<ShardedModel> {
    auto model = std::make_shared<SSMStudentImpl>(cfg, on_unit);
    return std::make_shared<SSMUnits>(SSMStudent(model));
  };
}

std::vector<int64_t> SSMUnits::borrowed_units(int64_t u) const {
  const int64_t head = model_->num_units() - 1;
  if (u == head && model_->config().tie_embeddings) return {0};
  return {};
}

}  // namespace shc::parallel
