// Data parallelism equals single-process training (SPEC §11), run under mpirun with 1, 2 and 4
// ranks: with the same seed and global batch, per-step losses and final parameters of DDP, FSDP
// (ZeRO-3 and ZeRO-2) and hybrid sharding match a single process training on the whole batch,
// with and without accumulation (no_sync); FSDP's per-rank memory is its 1/N share plus padding.
// In fp32 the per-step losses agree to 1e-5 relative. The final parameters are compared in fp64:
// in fp32, AdamW turns the round-off of near-zero gradients (the zero-initialised routing
// projections) into whole +-lr updates (m / sqrt(v) ~ sign(g)), so summation order alone moves
// those parameters by ~1e-4 of their scale; in fp64 the algorithm's exactness shows (1e-9).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <map>
#include <string>

#include "jobs/train_step.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"
#include "parallel/fsdp.h"
#include "parallel/runtime.h"
#include "parallel/transformer_units.h"
#include "tests/test_model_config.h"

namespace shc {
namespace {

constexpr int64_t kGlobalBatch = 8, kSeqLen = 16, kSteps = 4;

// The global batch of step s: the same rows on every rank, whatever the world size.
torch::Tensor global_batch(int64_t step) {
  auto g = torch::make_generator<at::CPUGeneratorImpl>(1000 + step);
  return torch::randint(61, {kGlobalBatch, kSeqLen + 1}, g);
}

struct Run {
  std::vector<double> losses;
  parallel::NamedParameters params;
};

enum class Strategy { kSingle, kDDP, kFSDP, kZeRO2, kHybrid };

// Trains kSteps steps with AdamW (lr 1e-2, decay 0.1 on matrices). kSingle: one process on the
// whole batch; otherwise one rank of `comm` on its slice of each global batch. `micro` rows per
// forward/backward. Hybrid shards within pairs of ranks (or alone on fewer than 4 ranks).
Run train(Strategy strategy, parallel::Communicator* comm, int64_t micro, double bucket_mb,
          torch::Dtype dtype = torch::kFloat, jobs::Precision precision = jobs::Precision::kFp32) {
  torch::manual_seed(7);
  SHCTransformer model(test::small_model_config());
  model->to(dtype);
  jobs::AdamWSettings s;
  s.lr = 1e-2;
  const int world = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  std::unique_ptr<parallel::DistributedDataParallel> ddp;
  std::unique_ptr<parallel::Communicator> shard_comm, replica_comm;
  std::unique_ptr<parallel::FullyShardedDataParallel> fsdp;
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (strategy == Strategy::kDDP) {
    ddp =
        std::make_unique<parallel::DistributedDataParallel>(model->parameters(), *comm, bucket_mb);
    ddp->broadcast_parameters(0);
  }
  if (strategy == Strategy::kFSDP || strategy == Strategy::kZeRO2 ||
      strategy == Strategy::kHybrid) {
    const int group = strategy == Strategy::kHybrid && world >= 4 ? 2 : world;
    shard_comm = comm->split(rank / group, rank);
    replica_comm = comm->split(rank % group, rank);
    fsdp = std::make_unique<parallel::FullyShardedDataParallel>(
        std::make_shared<parallel::TransformerUnits>(model), *shard_comm, replica_comm.get(),
        parallel::FullyShardedDataParallel::Options{strategy != Strategy::kZeRO2});
    opt = std::make_unique<torch::optim::AdamW>(
        fsdp->shards(),
        torch::optim::AdamWOptions(s.lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(0.0));
  } else {
    opt = jobs::make_adamw(*model, s);
  }
  Run run;
  for (int64_t step = 0; step < kSteps; ++step) {
    const int64_t local = kGlobalBatch / world;
    auto batch = global_batch(step).narrow(0, rank * local, local);
    double loss;
    if (fsdp) {
      fsdp->zero_grad();
      loss = jobs::accumulate_gradients([&](const torch::Tensor& ids) { return fsdp->loss(ids); },
                                        batch, micro, precision);
      fsdp->finish_step();
      fsdp->apply_weight_decay(s.lr, s.weight_decay);
    } else {
      opt->zero_grad();
      loss = jobs::accumulate_gradients(model, batch, micro, precision, [&](bool last) {
        if (ddp) ddp->set_sync(last);
      });
      if (ddp) ddp->finish_gradient_sync();
    }
    if (comm) {
      auto l = torch::tensor({loss}, torch::kDouble);
      comm->all_reduce(l, parallel::ReduceOp::kAvg);
      loss = l.item<double>();
    }
    run.losses.push_back(loss);
    opt->step();
  }
  if (fsdp) {
    run.params = fsdp->full_parameters();
    // Byte accounting: parameters + gradients + AdamW's two moments are exactly the 1/N share
    // of the padded units, and nothing of the full model stays allocated between steps.
    int64_t optimizer_bytes = 0;
    for (const auto& state : opt->state()) {
      const auto& adam = static_cast<const torch::optim::AdamWParamState&>(*state.second);
      optimizer_bytes +=
          (adam.exp_avg().numel() + adam.exp_avg_sq().numel()) * adam.exp_avg().element_size();
    }
    const int64_t n = shard_comm->size();
    const int64_t persistent = fsdp->persistent_parameter_and_gradient_bytes() + optimizer_bytes;
    const int64_t element = fsdp->shards()[0].element_size();
    EXPECT_EQ(persistent, fsdp->total_padded_numel() / n * element * 4);
    EXPECT_LT(fsdp->total_padded_numel() - fsdp->total_numel(), fsdp->num_units() * n);
    for (const auto& p : model->parameters()) EXPECT_EQ(p.numel(), 0);
  } else {
    for (const auto& item : model->named_parameters()) {
      run.params.emplace_back(item.key(), item.value().detach().clone());
    }
  }
  return run;
}

void expect_same_losses(const Run& a, const Run& b, double rel) {
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i) {
    EXPECT_NEAR(a.losses[i], b.losses[i], rel * std::abs(b.losses[i])) << "step " << i + 1;
  }
}

// By name: FSDP lists the parameters unit by unit, a module in registration order.
void expect_same_parameters(const Run& a, const Run& b, double rel) {
  ASSERT_EQ(a.params.size(), b.params.size());
  std::map<std::string, torch::Tensor> expected(b.params.begin(), b.params.end());
  for (const auto& [name, value] : a.params) {
    ASSERT_EQ(expected.count(name), 1u) << name;
    const auto& want = expected.at(name);
    const double scale = want.abs().max().item<double>() + 1e-12;
    EXPECT_LE((value - want).abs().max().item<double>() / scale, rel) << name;
  }
}

class DDP : public ::testing::Test {
 protected:
  void SetUp() override { comm_ = parallel::make_communicator("mpi", torch::kCPU); }
  void TearDown() override { comm_.reset(); }
  std::unique_ptr<parallel::Communicator> comm_;
};

TEST_F(DDP, EqualsOneProcessOnTheGlobalBatch) {
  const int64_t local = kGlobalBatch / comm_->size();
  // A tiny bucket size forces many buckets, so the ordering of their reductions is exercised.
  expect_same_losses(train(Strategy::kDDP, comm_.get(), local, 0.01),
                     train(Strategy::kSingle, nullptr, kGlobalBatch, 25.0), 1e-5);
  const auto single = train(Strategy::kSingle, nullptr, kGlobalBatch, 25.0, torch::kDouble);
  const auto ddp = train(Strategy::kDDP, comm_.get(), local, 0.01, torch::kDouble);
  expect_same_losses(ddp, single, 1e-12);
  expect_same_parameters(ddp, single, 1e-9);
}

TEST_F(DDP, AccumulationWithNoSyncEqualsOneLargeBatch) {
  // Each rank's share in micro-batches of 1: gradients stay local until the last one.
  expect_same_losses(train(Strategy::kDDP, comm_.get(), 1, 25.0),
                     train(Strategy::kSingle, nullptr, kGlobalBatch, 25.0), 1e-5);
  const auto single = train(Strategy::kSingle, nullptr, kGlobalBatch, 25.0, torch::kDouble);
  const auto accumulated = train(Strategy::kDDP, comm_.get(), 1, 25.0, torch::kDouble);
  expect_same_losses(accumulated, single, 1e-12);
  expect_same_parameters(accumulated, single, 1e-9);
}

TEST_F(DDP, ShardedStrategiesEqualDDP) {
  const int64_t local = kGlobalBatch / comm_->size();
  const auto ddp = train(Strategy::kDDP, comm_.get(), local, 25.0, torch::kDouble);
  for (auto strategy : {Strategy::kFSDP, Strategy::kZeRO2, Strategy::kHybrid}) {
    SCOPED_TRACE(strategy == Strategy::kFSDP    ? "fsdp"
                 : strategy == Strategy::kZeRO2 ? "zero2"
                                                : "hybrid");
    // Micro-batches of 1: gradients reduce-scattered per micro-batch accumulate in the shards.
    const auto sharded = train(strategy, comm_.get(), 1, 25.0, torch::kDouble);
    expect_same_losses(sharded, ddp, 1e-12);
    expect_same_parameters(sharded, ddp, 1e-9);
  }
  expect_same_losses(train(Strategy::kFSDP, comm_.get(), local, 25.0),
                     train(Strategy::kDDP, comm_.get(), local, 25.0), 1e-5);
}

TEST_F(DDP, Bf16StaysWithinTwoPercentOfFp32) {
  const int64_t local = kGlobalBatch / comm_->size();
  const auto fp32 = train(Strategy::kDDP, comm_.get(), local, 25.0);
  const auto bf16 =
      train(Strategy::kFSDP, comm_.get(), local, 25.0, torch::kFloat, jobs::Precision::kBf16);
  // bf16 keeps 8 significant bits in the matmuls; fp32 master weights and reductions keep the
  // trajectories within 2 % over these steps.
  expect_same_losses(bf16, fp32, 2e-2);
}

TEST_F(DDP, GradientsAreIdenticalOnEveryRank) {
  torch::manual_seed(comm_->rank());  // different initial weights per rank ...
  SHCTransformer model(test::small_model_config());
  parallel::DistributedDataParallel ddp(model->parameters(), *comm_, 0.05);
  ddp.broadcast_parameters(0);                               // ... until the broadcast
  auto batch = global_batch(0).narrow(0, comm_->rank(), 1);  // different data per rank
  model->forward(batch, batch).backward();
  ddp.finish_gradient_sync();
  EXPECT_GT(ddp.num_buckets(), 1u);
  for (const auto& p : model->parameters()) {
    auto mine = p.grad().clone(), root = p.grad().clone();
    comm_->broadcast(root, 0);
    EXPECT_TRUE(torch::equal(mine, root));
  }
}

}  // namespace
}  // namespace shc

int main(int argc, char** argv) {
  auto& runtime = shc::parallel::Runtime::instance();
  ::testing::InitGoogleTest(&argc, argv);
  if (runtime.rank() != 0) {
    // One readable report: the other ranks only print failures.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  // Every rank must agree on the outcome, or mpirun would report success for a failing rank.
  int any_failed = failed;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  runtime.finalize();
  return any_failed ? 1 : 0;
}
