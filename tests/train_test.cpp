// The shared training-step pieces (jobs/trainer.h, jobs/lr_schedule.h): the learning-rate
// schedule at chosen steps, AdamW's decay groups, and gradient accumulation equal to one large
// batch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "jobs/lr_schedule.h"
#include "jobs/train_step.h"
#include "tests/test_model_config.h"

namespace shc::jobs {
namespace {

TEST(LrSchedule, WarmupThenCosineToTheFloor) {
  LrSchedule s{1e-3, 10, 110, 0.1};
  EXPECT_DOUBLE_EQ(s.at(1), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(5), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_NEAR(s.at(60), 1e-4 + 9e-4 * 0.5, 1e-15);  // half-way: cos(pi / 2) = 0
  EXPECT_NEAR(s.at(35), 1e-4 + 9e-4 * 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_NEAR(s.at(110), 1e-4, 1e-15);
  EXPECT_NEAR(s.at(500), 1e-4, 1e-15);
  LrSchedule no_warmup{2e-3, 0, 100, 0.0};
  EXPECT_DOUBLE_EQ(no_warmup.at(0), 2e-3);
  EXPECT_NEAR(no_warmup.at(100), 0.0, 1e-18);
}

TEST(AdamW, DecaysMatricesOnly) {
  SHCTransformer m(test::small_model_config());
  auto opt = make_adamw(*m, AdamWSettings{});
  ASSERT_EQ(opt->param_groups().size(), 2u);
  int64_t decayed = 0, plain = 0;
  for (const auto& p : opt->param_groups()[0].params()) {
    EXPECT_GE(p.dim(), 2);
    decayed += p.numel();
  }
  for (const auto& p : opt->param_groups()[1].params()) plain += p.numel();
  EXPECT_EQ(decayed + plain, m->num_parameters());
  // Not decayed: 2 norms per block + final norm, and the routing biases, scales and generators.
  const auto& rms = m->block_list()[0]->attn_norm->weight;
  bool found = false;
  for (const auto& p : opt->param_groups()[1].params()) found |= p.is_same(rms);
  EXPECT_TRUE(found);
  EXPECT_DOUBLE_EQ(
      static_cast<torch::optim::AdamWOptions&>(opt->param_groups()[1].options()).weight_decay(),
      0.0);
}

TEST(Accumulation, MicroBatchesGiveTheGradientOfOneLargeBatch) {
  torch::manual_seed(3);
  auto cfg = test::small_model_config();
  SHCTransformer m(cfg);
  m->to(torch::kDouble);  // fp64: the two summation orders then agree to ~1e-12
  auto batch = torch::randint(cfg.vocab_size, {8, 17});
  const double loss_full = accumulate_gradients(m, batch, 8, Precision::kFp32);
  std::vector<torch::Tensor> full;
  for (auto& p : m->parameters()) full.push_back(p.grad().clone());
  m->zero_grad();
  const double loss_micro = accumulate_gradients(m, batch, 2, Precision::kFp32);
  EXPECT_NEAR(loss_full, loss_micro, 1e-12);
  auto params = m->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& g = params[i].grad();
    const double scale = full[i].abs().max().item<double>() + 1e-12;
    EXPECT_LE((g - full[i]).abs().max().item<double>() / scale, 1e-10) << "parameter " << i;
  }
  EXPECT_THROW(accumulate_gradients(m, batch, 3, Precision::kFp32), std::invalid_argument);
}

TEST(Accumulation, Bf16AutocastStaysCloseToFp32) {
  torch::manual_seed(4);
  auto cfg = test::small_model_config();
  SHCTransformer m(cfg);
  auto batch = torch::randint(cfg.vocab_size, {4, 17});
  const double fp32 = accumulate_gradients(m, batch, 4, Precision::kFp32);
  const double bf16 = accumulate_gradients(m, batch, 4, Precision::kBf16);
  // bf16 keeps 8 mantissa bits: a relative error of a few 1e-3 in the loss is expected.
  EXPECT_NEAR(bf16, fp32, 2e-2 * fp32);
  EXPECT_NE(bf16, fp32);  // autocast really changed the compute
  for (const auto& p : m->parameters()) EXPECT_EQ(p.grad().scalar_type(), torch::kFloat);
}

}  // namespace
}  // namespace shc::jobs
