#include "jobs/distillation.h"

#include <torch/torch.h>

#include <stdexcept>

#include "core/transformer.h"

namespace shc::jobs {

DistillationLoss distillation_loss(const torch::Tensor& student_logits,
                                   const torch::Tensor& teacher_logits, const torch::Tensor& ids,
                                   double temperature, double alpha_kd, double alpha_ce,
                                   const HiddenStates* hidden) {
  if (temperature <= 0) throw std::invalid_argument("distill.temperature must be positive");
  if (student_logits.sizes() != teacher_logits.sizes()) {
    throw std::invalid_argument("student and teacher logits differ in shape (vocabularies?)");
  }
  const int64_t t = ids.size(1), vocab = student_logits.size(-1);
  // fp32 at least: the softmaxes of a bf16 forward are taken in full precision.
  auto positions = [&](const torch::Tensor& logits) {
    return (logits.narrow(1, 0, t - 1).to(torch::kFloat) / temperature).reshape({-1, vocab});
  };
  const auto log_p_student = torch::log_softmax(positions(student_logits), -1);
  const auto log_p_teacher = torch::log_softmax(positions(teacher_logits.detach()), -1);
  // KL(p_t || p_s) = sum_v p_t (log p_t - log p_s), per token, then the mean over tokens.
  const auto kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean();
  const auto ce = next_token_loss(student_logits, ids);
  auto loss = alpha_kd * temperature * temperature * kl + alpha_ce * ce;
  torch::Tensor hidden_mse;
  if (hidden != nullptr) {
    const auto s = hidden->student_projected.narrow(1, 0, t - 1).to(torch::kFloat);
    const auto h = hidden->teacher.detach().narrow(1, 0, t - 1).to(torch::kFloat);
    hidden_mse = (s - h).pow(2).mean();
    loss = loss + hidden->alpha * hidden_mse;
    hidden_mse = hidden_mse.detach();
  }
  return {loss, kl.detach(), ce.detach(), hidden_mse};
}

}  // namespace shc::jobs
