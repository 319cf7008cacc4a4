// The distillation objective (jobs/distillation.h) against hand-computed values, and its
// gradients: they reach every student parameter and never the frozen teacher.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/ssm_student.h"
#include "core/transformer.h"
#include "jobs/distillation.h"

namespace shc {
namespace {

// Two rows of T = 2 tokens over a vocabulary of 2: only position 0 predicts a next token. Row 0:
// teacher p = softmax(ln 3, 0) = (3/4, 1/4) at T = 1, student uniform; row 1: both uniform.
TEST(Distillation, KlIsAPerTokenMeanScaledByTSquaredPlusWeightedCrossEntropy) {
  const auto student = torch::zeros({2, 2, 2});
  auto teacher = torch::zeros({2, 2, 2});
  teacher[0][0][0] = std::log(3.0);
  const auto ids = torch::tensor({0, 1, 0, 0}, torch::kLong).reshape({2, 2});
  for (double t : {1.0, 2.0}) {
    // softmax(z / t) of the teacher's row 0 at position 0.
    const double a = std::exp(std::log(3.0) / t), p0 = a / (a + 1), p1 = 1 / (a + 1);
    const double kl_row0 = p0 * std::log(p0 / 0.5) + p1 * std::log(p1 / 0.5);
    const double kl = kl_row0 / 2;  // the mean over the two predicting positions, not the sum
    const double ce = std::log(2.0);
    const auto d = jobs::distillation_loss(student, teacher, ids, t, 1.0, 0.5);
    EXPECT_NEAR(d.kl.item<double>(), kl, 1e-6) << "T = " << t;
    EXPECT_NEAR(d.ce.item<double>(), ce, 1e-6);
    EXPECT_NEAR(d.loss.item<double>(), t * t * kl + 0.5 * ce, 1e-6);
  }
  EXPECT_THROW(jobs::distillation_loss(student, teacher, ids, 0.0, 1, 1), std::invalid_argument);
}

// The hidden-state term: the mean squared difference over predicting positions and dimensions.
TEST(Distillation, HiddenTermIsTheMeanSquaredDifferenceOverPositionsAndDimensions) {
  const auto logits = torch::zeros({1, 3, 2});
  const auto ids = torch::tensor({0, 1, 1}, torch::kLong).reshape({1, 3});
  // Positions 0 and 1 predict; position 2's difference (100) must not count.
  const auto student = torch::tensor({1.0, 2.0, 3.0, 4.0, 100.0, 100.0}).reshape({1, 3, 2});
  const auto teacher = torch::tensor({0.0, 0.0, 3.0, 2.0, 0.0, 0.0}).reshape({1, 3, 2});
  const jobs::HiddenStates hidden{student, teacher, 0.25};
  const auto plain = jobs::distillation_loss(logits, logits, ids, 1.0, 1.0, 1.0);
  const auto d = jobs::distillation_loss(logits, logits, ids, 1.0, 1.0, 1.0, &hidden);
  const double mse = (1.0 + 4.0 + 0.0 + 4.0) / 4;
  EXPECT_NEAR(d.hidden_mse.item<double>(), mse, 1e-6);
  EXPECT_NEAR(d.loss.item<double>(), plain.loss.item<double>() + 0.25 * mse, 1e-6);
  EXPECT_FALSE(plain.hidden_mse.defined());
}

TEST(Distillation, GradientsReachEveryStudentParameterAndNoTeacherParameter) {
  torch::manual_seed(3);
  ModelConfig tc = get_config("tiny");
  tc.n_layers = 1;
  tc.hidden_dim = 32;
  tc.n_heads = 2;
  tc.ffn_dim = 64;
  SHCTransformer teacher(tc);
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  SSMStudent student(SSMConfig::from_teacher_config(tc));
  const auto ids = torch::randint(0, tc.vocab_size, {2, 9}, torch::kLong);
  torch::Tensor teacher_logits;
  {
    torch::NoGradGuard no_grad;
    teacher_logits = teacher->forward(ids);
  }
  jobs::distillation_loss(student->forward(ids), teacher_logits, ids, 2.0, 1.0, 0.5)
      .loss.backward();
  for (const auto& item : student->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0) << item.key();
  }
  for (const auto& item : teacher->named_parameters()) {
    EXPECT_FALSE(item.value().grad().defined()) << item.key();
  }
}

}  // namespace
}  // namespace shc
