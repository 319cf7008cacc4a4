#include "jobs/distill_student.h"

#include <torch/torch.h>

#include "core/precision.h"

namespace shc::jobs {

namespace {
constexpr const char* kProjection = "hidden_projection.weight";
}  // namespace

parallel::ShardedModelBuilder StudentWithHiddenProjection::builder(SSMConfig cfg,
                                                                   int64_t teacher_hidden) {
  return [cfg, teacher_hidden](const parallel::UnitBuilt& on_unit) {
    auto self = std::make_shared<StudentWithHiddenProjection>();
    const int64_t head = cfg.n_layers + 1;
    auto student = std::make_shared<SSMStudentImpl>(
        cfg, [&](int64_t u, const parallel::NamedParameters& parameters) {
          if (u != head) {
            if (on_unit) on_unit(u, parameters);
            return;
          }
          self->projection_ = torch::nn::Linear(
              torch::nn::LinearOptions(cfg.hidden_dim, teacher_hidden).bias(false));
          auto all = parameters;
          all.emplace_back(kProjection, self->projection_->weight);
          if (on_unit) on_unit(u, all);
        });
    self->student_ = SSMStudent(student);
    return std::shared_ptr<parallel::ShardedModel>(self);
  };
}

parallel::NamedParameters StudentWithHiddenProjection::unit_parameters(int64_t u) const {
  auto parameters = student_->unit_parameters(u);
  if (u == num_units() - 1) parameters.emplace_back(kProjection, projection_->weight);
  return parameters;
}

std::vector<int64_t> StudentWithHiddenProjection::borrowed_units(int64_t u) const {
  if (u == num_units() - 1 && student_->config().tie_embeddings) return {0};
  return {};
}

torch::Tensor StudentWithHiddenProjection::run_unit(int64_t u, const torch::Tensor& input) {
  if (u != num_units() - 1) return student_->run_unit(u, input);
  auto hidden = at_least_fp32(student_->final_norm(input));
  const auto logits = student_->lm_logits(hidden);
  return torch::cat({logits, projection_(hidden).to(logits.scalar_type())}, -1);
}

void StudentWithHiddenProjection::set_training(bool training) {
  student_->train(training);
  projection_->train(training);
}

void StudentWithHiddenProjection::to(const torch::Device& device) {
  student_->to(device);
  projection_->to(device);
}

}  // namespace shc::jobs
