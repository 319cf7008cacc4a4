// Data parallelism equals single-process training (SPEC §11), run under mpirun with 1, 2 and 4
// ranks: with the same seed and global batch, per-step losses and final parameters of DDP match a
// single process training on the whole batch, with and without accumulation (no_sync).
// In fp32 the per-step losses agree to 1e-5 relative. The final parameters are compared in fp64:
// in fp32, AdamW turns the round-off of near-zero gradients (the zero-initialised routing
// projections) into whole +-lr updates (m / sqrt(v) ~ sign(g)), so summation order alone moves
// those parameters by ~1e-4 of their scale; in fp64 the algorithm's exactness shows (1e-9).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include "jobs/trainer.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"
#include "parallel/runtime.h"

namespace shc {
namespace {

constexpr int64_t kGlobalBatch = 8, kSeqLen = 16, kSteps = 4;

ModelConfig test_config() {
  ModelConfig c;
  c.vocab_size = 61;
  c.hidden_dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.ffn_dim = 48;
  c.max_seq_len = 32;
  c.residual = ResidualKind::kSHC;
  return c;
}

// The global batch of step s: the same rows on every rank, whatever the world size.
torch::Tensor global_batch(int64_t step) {
  auto g = torch::make_generator<at::CPUGeneratorImpl>(1000 + step);
  return torch::randint(61, {kGlobalBatch, kSeqLen + 1}, g);
}

struct Run {
  std::vector<double> losses;
  std::vector<torch::Tensor> params;
};

// Trains kSteps steps. With `comm`, as one DDP rank on its slice of each global batch; without, as
// a single process on the whole batch. `micro` rows per forward/backward.
Run train(parallel::Communicator* comm, int64_t micro, double bucket_mb,
          torch::Dtype dtype = torch::kFloat) {
  torch::manual_seed(7);
  SHCTransformer model(test_config());
  model->to(dtype);
  jobs::AdamWSettings s;
  s.lr = 1e-2;
  auto opt = jobs::make_adamw(*model, s);
  std::unique_ptr<parallel::DistributedDataParallel> ddp;
  const int world = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  if (comm) {
    ddp =
        std::make_unique<parallel::DistributedDataParallel>(model->parameters(), *comm, bucket_mb);
    ddp->broadcast_parameters(0);
  }
  Run run;
  for (int64_t step = 0; step < kSteps; ++step) {
    const int64_t local = kGlobalBatch / world;
    auto batch = global_batch(step).narrow(0, rank * local, local);
    opt->zero_grad();
    double loss =
        jobs::accumulate_gradients(model, batch, micro, jobs::Precision::kFp32, [&](bool last) {
          if (ddp) ddp->set_sync(last);
        });
    if (ddp) {
      ddp->finish_gradient_sync();
      auto l = torch::tensor({loss}, torch::kDouble);
      comm->all_reduce(l, parallel::ReduceOp::kAvg);
      loss = l.item<double>();
    }
    run.losses.push_back(loss);
    opt->step();
  }
  for (const auto& p : model->parameters()) run.params.push_back(p.detach().clone());
  return run;
}

void expect_same_losses(const Run& a, const Run& b, double rel) {
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i) {
    EXPECT_NEAR(a.losses[i], b.losses[i], rel * std::abs(b.losses[i])) << "step " << i + 1;
  }
}

void expect_same_parameters(const Run& a, const Run& b, double rel) {
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i) {
    const double scale = b.params[i].abs().max().item<double>() + 1e-12;
    EXPECT_LE((a.params[i] - b.params[i]).abs().max().item<double>() / scale, rel)
        << "parameter " << i;
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
  expect_same_losses(train(comm_.get(), local, 0.01), train(nullptr, kGlobalBatch, 25.0), 1e-5);
  const auto single = train(nullptr, kGlobalBatch, 25.0, torch::kDouble);
  const auto ddp = train(comm_.get(), local, 0.01, torch::kDouble);
  expect_same_losses(ddp, single, 1e-12);
  expect_same_parameters(ddp, single, 1e-9);
}

TEST_F(DDP, AccumulationWithNoSyncEqualsOneLargeBatch) {
  // Each rank's share in micro-batches of 1: gradients stay local until the last one.
  expect_same_losses(train(comm_.get(), 1, 25.0), train(nullptr, kGlobalBatch, 25.0), 1e-5);
  const auto single = train(nullptr, kGlobalBatch, 25.0, torch::kDouble);
  const auto accumulated = train(comm_.get(), 1, 25.0, torch::kDouble);
  expect_same_losses(accumulated, single, 1e-12);
  expect_same_parameters(accumulated, single, 1e-9);
}

TEST_F(DDP, GradientsAreIdenticalOnEveryRank) {
  torch::manual_seed(comm_->rank());  // different initial weights per rank ...
  SHCTransformer model(test_config());
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
