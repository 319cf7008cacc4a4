// The distillation objective (SPEC §4.4; Hinton et al. 2015): a student learns a frozen teacher's
// next-token distributions,
//   loss = alpha_kd * T^2 * KL(p_teacher || p_student) + alpha_ce * CE(student, next tokens)
//          [+ alpha_hidden * MSE(P h_student, h_teacher)],
// p = softmax(logits / T), the KL taken per token and averaged over tokens (not summed over the
// sequence), T^2 keeping the gradient scale independent of T; the optional hidden-state term
// (FitNets, Romero et al. 2015) compares the student's final hidden states, through a learned
// projection P, with the teacher's, averaged over positions and dimensions. Positions are those
// that predict a next token: 0 .. T-2 of a row of T ids, the same as the cross entropy's.
#pragma once

#include <torch/types.h>

namespace shc::jobs {

struct DistillationLoss {
  torch::Tensor loss;        // what is differentiated
  torch::Tensor kl;          // mean per-token KL(teacher || student) at temperature T (detached)
  torch::Tensor ce;          // mean next-token cross entropy of the student (detached)
  torch::Tensor hidden_mse;  // the hidden-state term before its weight (detached); undefined if off
};

// The hidden-state term's inputs: the student's projected final hidden states and the teacher's,
// both (batch, T, d_teacher).
struct HiddenStates {
  torch::Tensor student_projected, teacher;
  double alpha = 0;
};

// student_logits, teacher_logits: (batch, T, vocab); ids: (batch, T). The teacher's logits carry
// no gradient. std::invalid_argument for temperature <= 0 or mismatched shapes.
DistillationLoss distillation_loss(const torch::Tensor& student_logits,
                                   const torch::Tensor& teacher_logits, const torch::Tensor& ids,
                                   double temperature, double alpha_kd, double alpha_ce,
                                   const HiddenStates* hidden = nullptr);

}  // namespace shc::jobs
