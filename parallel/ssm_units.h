// SSMStudent as a sequence of units for FSDP and the trainer (parallel/sharded_model.h): the
// embedding, each Mamba block, the head. A tied LM head borrows the embedding's weight.
#pragma once

#include "core/ssm_student.h"
#include "parallel/sharded_model.h"

namespace shc::parallel {

class SSMUnits final : public ShardedModel {
 public:
  explicit SSMUnits(SSMStudent model) : model_(std::move(model)) {}
  // Builds SSMStudent(cfg) unit by unit, calling `on_unit` after each: the same values as
  // torch::manual_seed(s); SSMStudent(cfg) for the same s.
  static ShardedModelBuilder builder(SSMConfig cfg);

  int64_t num_units() const override { return model_->num_units(); }
  NamedParameters unit_parameters(int64_t u) const override { return model_->unit_parameters(u); }
  std::vector<int64_t> borrowed_units(int64_t u) const override;
  torch::Tensor run_unit(int64_t u, const torch::Tensor& input) override {
    return model_->run_unit(u, input);
  }
  void set_training(bool training) override { model_->train(training); }
  void to(const torch::Device& device) override { model_->to(device); }

  const SSMStudent& model() const { return model_; }

 private:
  SSMStudent model_;
};

}  // namespace shc::parallel
