// SHCTransformer as a sequence of units for FSDP (parallel/sharded_model.h): the embedding, each
// block, the head (core/transformer.h defines the units). A tied LM head borrows the embedding's
// weight; with compressed streams every block borrows the head unit's stream codec.
#pragma once

#include "core/transformer.h"
#include "parallel/sharded_model.h"

namespace shc::parallel {

class TransformerUnits final : public ShardedModel {
 public:
  explicit TransformerUnits(SHCTransformer model) : model_(std::move(model)) {}
  // Builds SHCTransformer(cfg) unit by unit, calling `on_unit` after each: the same values as
  // torch::manual_seed(s); SHCTransformer(cfg) for the same s.
  static ShardedModelBuilder builder(ModelConfig cfg);

  int64_t num_units() const override { return model_->num_units(); }
  NamedParameters unit_parameters(int64_t u) const override { return model_->unit_parameters(u); }
  std::vector<int64_t> borrowed_units(int64_t u) const override;
  torch::Tensor run_unit(int64_t u, const torch::Tensor& input) override {
    return model_->run_unit(u, input);
  }
  void set_training(bool training) override { model_->train(training); }
  void to(const torch::Device& device) override { model_->to(device); }

  const SHCTransformer& model() const { return model_; }

 private:
  SHCTransformer model_;
};

}  // namespace shc::parallel
