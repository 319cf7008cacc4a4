#include "parallel/transformer_units.h"

namespace shc::parallel {

ShardedModelBuilder TransformerUnits::builder(ModelConfig cfg) {
  return [cfg](const UnitBuilt& on_unit) -> std::shared_ptr<ShardedModel> {
    auto model = std::make_shared<SHCTransformerImpl>(cfg, on_unit);
    return std::make_shared<TransformerUnits>(SHCTransformer(model));
  };
}

std::vector<int64_t> TransformerUnits::borrowed_units(int64_t u) const {
  const auto& cfg = model_->config();
  const int64_t head = model_->num_units() - 1;
  if (u == head && cfg.tie_embeddings) return {0};
  // The embedding and every block use the stream codec (owned by the head) when compressed.
  if (u < head && cfg.compressed_streams()) return {head};
  return {};
}

}  // namespace shc::parallel
