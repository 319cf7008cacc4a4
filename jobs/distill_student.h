// The student as `shc distill` trains it when the hidden-state term is on (distill.alpha_hidden >
// 0): SSMStudent's units, plus a learned projection P (d_student -> d_teacher, stored as
// "hidden_projection.weight") owned by the head unit, whose output is then
// [logits | P · final_hidden] along the last dimension, so that the one training loop — and FSDP,
// which runs units — carries both to the loss. The projection is used only by the distillation
// loss: loading the student for generation or evaluation ignores it.
#pragma once

#include <torch/nn/modules/linear.h>

#include "core/ssm_student.h"
#include "parallel/sharded_model.h"

namespace shc::jobs {

class StudentWithHiddenProjection final : public parallel::ShardedModel {
 public:
  // Builds SSMStudent(cfg) unit by unit; the projection is created with the head unit (from the
  // same seeded generator on every rank) and reported with it.
  static parallel::ShardedModelBuilder builder(SSMConfig cfg, int64_t teacher_hidden);

  int64_t num_units() const override { return student_->num_units(); }
  parallel::NamedParameters unit_parameters(int64_t u) const override;
  std::vector<int64_t> borrowed_units(int64_t u) const override;
  torch::Tensor run_unit(int64_t u, const torch::Tensor& input) override;
  void set_training(bool training) override;
  void to(const torch::Device& device) override;

 private:
  SSMStudent student_{nullptr};
  torch::nn::Linear projection_{nullptr};
};

}  // namespace shc::jobs
