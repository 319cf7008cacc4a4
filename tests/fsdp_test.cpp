// FSDP's own properties (SPEC §5), run under mpirun with 1, 2 and 4 ranks; data_parallel_test
// checks that it trains like one process.
// - Device rule: every tensor FSDP and hybrid sharding hand to a collective over a training step
//   came from the communicator's buffer helpers (a CheckingCommunicator records them).
// - ZeRO-2 vs ZeRO-3: all-gathers per step and peak bytes of a step.
// - bf16 does not keep a bf16 copy of every gathered unit: its peak is not above fp32's.
// - The communication thread keeps queue order and passes exceptions on.
// - With adaptive rank (random Gumbel noise inside every block) the backward recompute replays the
//   forward's random numbers without deadlocking on the generator: FSDP gradients equal plain
//   autograd's averaged over the ranks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <stdexcept>
#include <string>

#include "jobs/counting_allocator.h"
#include "jobs/train_step.h"
#include "parallel/checking_communicator.h"
#include "parallel/communication_thread.h"
#include "parallel/communicator.h"
#include "parallel/fsdp.h"
#include "parallel/transformer_units.h"
#include "tests/test_model_config.h"

namespace shc {
namespace {

using parallel::FullyShardedDataParallel;

// This rank's `rows` of a batch of sequences of `tokens` that depends only on the world size.
torch::Tensor local_batch(const parallel::Communicator& comm, int64_t vocab, int64_t rows = 2,
                          int64_t tokens = 17) {
  auto g = at::detail::createCPUGenerator(1234);
  auto batch = torch::randint(vocab, {rows * comm.size(), tokens}, g);
  return batch.narrow(0, comm.rank() * rows, rows);
}

// A model whose blocks' parameters outweigh its activations on local_batch()'s default rows, so
// that memory peaks show which units are gathered.
ModelConfig weight_heavy_config() {
  auto cfg = test::small_model_config();
  cfg.hidden_dim = 64;
  cfg.ffn_dim = 256;
  cfg.n_layers = 6;
  return cfg;
}

// FSDP over `comm` in shard groups of `group` ranks (replicated across groups).
struct Sharded {
  std::unique_ptr<parallel::Communicator> shard_comm, replica_comm;
  std::unique_ptr<FullyShardedDataParallel> fsdp;

  Sharded(parallel::Communicator& comm, SHCTransformer model, int group, bool zero2) {
    shard_comm = comm.split(comm.rank() / group, comm.rank());
    replica_comm = comm.split(comm.rank() % group, comm.rank());
    fsdp = std::make_unique<FullyShardedDataParallel>(
        std::make_shared<parallel::TransformerUnits>(model), *shard_comm, replica_comm.get(),
        FullyShardedDataParallel::Options{!zero2});
  }
};

// One training step's gradient work: forward and backward of every row in one micro-batch,
// reduction, clipping; returns the mean loss over the ranks.
double gradient_step(FullyShardedDataParallel& fsdp, parallel::Communicator& comm,
                     const torch::Tensor& batch,
                     jobs::Precision precision = jobs::Precision::kFp32) {
  fsdp.zero_grad();
  const double loss = jobs::accumulate_gradients(
      [&](const torch::Tensor& ids) { return fsdp.loss(ids); }, batch, batch.size(0), precision);
  fsdp.finish_step();
  fsdp.clip_grad_norm(1.0);
  return comm.all_reduce_scalar(loss, parallel::ReduceOp::kAvg);
}

class FSDP : public ::testing::Test {
 protected:
  void SetUp() override {
    comm_ = std::make_unique<parallel::CheckingCommunicator>(
        parallel::make_communicator("mpi", torch::kCPU));
    plain_ = parallel::make_communicator("mpi", torch::kCPU);
  }
  void TearDown() override {
    comm_.reset();
    plain_.reset();
  }
  // Shard groups of 2 on 4 ranks, else of the whole world.
  int hybrid_group() const { return comm_->size() >= 4 ? 2 : comm_->size(); }

  std::unique_ptr<parallel::CheckingCommunicator> comm_;
  std::unique_ptr<parallel::Communicator> plain_;
};

TEST_F(FSDP, EveryCollectiveTensorComesFromTheCommunicator) {
  for (int group : {comm_->size(), hybrid_group()}) {
    torch::manual_seed(7);
    Sharded sharded(*comm_, SHCTransformer(test::small_model_config()), group, false);
    const auto batch = local_batch(*comm_, test::small_model_config().vocab_size);
    for (bool bf16 : {false, true}) {
      gradient_step(*sharded.fsdp, *comm_, batch,
                    bf16 ? jobs::Precision::kBf16 : jobs::Precision::kFp32);
    }
    sharded.fsdp->full_parameters();
  }
  EXPECT_GT(comm_->count("all_gather"), 0);
  EXPECT_GT(comm_->count("reduce_scatter"), 0);
  EXPECT_TRUE(comm_->violations().empty()) << comm_->violations().front();
}

// All-gathers of one step and the peak bytes above the bytes live before it.
struct StepFigures {
  int64_t all_gathers = 0, peak_bytes = 0;
};

// The second of two steps (the first creates lazily made state) on `comm`: the counts of a
// CheckingCommunicator, or the peak bytes of a plain one (the checking one keeps every buffer).
template <typename Measure>
void second_step(parallel::Communicator& comm, const ModelConfig& cfg, const torch::Tensor& batch,
                 bool zero2, jobs::Precision precision, Measure&& measure) {
  torch::manual_seed(7);
  Sharded sharded(comm, SHCTransformer(cfg), comm.size(), zero2);
  gradient_step(*sharded.fsdp, comm, batch, precision);
  measure([&] { gradient_step(*sharded.fsdp, comm, batch, precision); });
}

StepFigures measure_step(parallel::CheckingCommunicator& checking, parallel::Communicator& plain,
                         const ModelConfig& cfg, const torch::Tensor& batch, bool zero2,
                         jobs::Precision precision) {
  StepFigures figures;
  second_step(checking, cfg, batch, zero2, precision, [&](const auto& step) {
    checking.reset_counts();
    step();
    figures.all_gathers = checking.count("all_gather");
  });
  auto& allocator = jobs::CountingCpuAllocator::install();
  second_step(plain, cfg, batch, zero2, precision, [&](const auto& step) {
    allocator.reset_peak();
    const int64_t before = allocator.live_bytes();
    step();
    figures.peak_bytes = allocator.peak_bytes() - before;
  });
  if (plain.rank() == 0) {
    std::printf("%s %s: %lld all-gathers, peak %lld bytes above the step's start\n",
                zero2 ? "ZeRO-2" : "ZeRO-3", precision == jobs::Precision::kBf16 ? "bf16" : "fp32",
                static_cast<long long>(figures.all_gathers),
                static_cast<long long>(figures.peak_bytes));
  }
  return figures;
}

TEST_F(FSDP, ZeRO2GathersEachBlockOnceAndHoldsMoreMemory) {
  const auto cfg = weight_heavy_config();
  const auto batch = local_batch(*comm_, cfg.vocab_size);
  const int64_t units = cfg.n_layers + 2;  // embedding, blocks, head
  const auto zero3 = measure_step(*comm_, *plain_, cfg, batch, false, jobs::Precision::kFp32);
  const auto zero2 = measure_step(*comm_, *plain_, cfg, batch, true, jobs::Precision::kFp32);
  // ZeRO-3 gathers every unit for its forward and again for its backward recompute, and the
  // tied head gathers the embedding unit both times too; ZeRO-2 keeps each unit from its forward
  // to its backward, so the head finds the embedding still gathered.
  EXPECT_EQ(zero3.all_gathers, 2 * units + 2);
  EXPECT_EQ(zero2.all_gathers, units);
  EXPECT_GT(zero2.peak_bytes, zero3.peak_bytes);
}

// A training-shaped step (activations outweigh one block's parameters): bf16 must come out below
// fp32, which a bf16 copy of every gathered block kept for the step would prevent.
TEST_F(FSDP, Bf16PeakIsNotAboveFp32) {
  auto cfg = test::small_model_config();
  cfg.n_layers = 6;
  const auto batch = local_batch(*comm_, cfg.vocab_size, 8, cfg.max_seq_len);
  const auto fp32 = measure_step(*comm_, *plain_, cfg, batch, false, jobs::Precision::kFp32);
  const auto bf16 = measure_step(*comm_, *plain_, cfg, batch, false, jobs::Precision::kBf16);
  EXPECT_LE(bf16.peak_bytes, fp32.peak_bytes);
}

// Plain autograd on each rank's rows, gradients averaged over the ranks, one SGD step: what FSDP
// must compute when the recompute replays the forward's random numbers.
std::map<std::string, torch::Tensor> replicated_sgd_step(parallel::Communicator& comm,
                                                         ModelConfig cfg,
                                                         const torch::Tensor& batch) {
  torch::manual_seed(7);
  SHCTransformer model(cfg);
  torch::manual_seed(99);
  model->forward(batch, batch).backward();
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> params;
  for (auto& item : model->named_parameters()) {
    const auto& p = item.value();
    auto grad = comm.empty(p.numel(), p.scalar_type());
    grad.copy_(p.grad().reshape({-1}));
    comm.all_reduce(grad, parallel::ReduceOp::kAvg);
    params[item.key()] = p.detach() - 0.1 * grad.view(p.sizes());
  }
  return params;
}

// One FSDP step (and hybrid, on 4 ranks) equals replicated_sgd_step.
void expect_step_equals_replicated(parallel::Communicator& comm, const ModelConfig& cfg,
                                   int hybrid_group) {
  const auto batch = local_batch(comm, cfg.vocab_size);
  const auto expected = replicated_sgd_step(comm, cfg, batch);
  for (int group : {comm.size(), hybrid_group}) {
    torch::manual_seed(7);
    Sharded sharded(comm, SHCTransformer(cfg), group, false);
    torch::manual_seed(99);
    sharded.fsdp->zero_grad();
    sharded.fsdp->loss(batch).backward();
    sharded.fsdp->finish_step();
    torch::optim::SGD sgd(sharded.fsdp->shards(), torch::optim::SGDOptions(0.1));
    sgd.step();
    const auto params = sharded.fsdp->full_parameters();
    ASSERT_EQ(params.size(), expected.size());
    for (const auto& [name, value] : params) {
      // fp32 round-off of a different summation order (reduce-scatter vs all-reduce).
      EXPECT_TRUE(torch::allclose(value, expected.at(name), 1e-5, 1e-6)) << name;
    }
  }
}

TEST_F(FSDP, AdaptiveRankRecomputeReplaysTheForwardNoise) {
  auto cfg = test::small_model_config();
  cfg.adaptive_rank = true;
  expect_step_equals_replicated(*comm_, cfg, hybrid_group());
}

// Untied head, stream offsets and compressed streams: every block borrows the head unit's codec.
TEST_F(FSDP, BorrowedCodecAndUntiedHeadTrainLikeReplicas) {
  auto cfg = test::small_model_config();
  cfg.tie_embeddings = false;
  cfg.stream_offsets = true;
  cfg.stream_rank = 2;
  expect_step_equals_replicated(*comm_, cfg, hybrid_group());
}

// Built unit by unit, each unit sharded before the next exists, the model holds exactly the
// values of one process constructing it whole after the same seed; the units own every parameter
// once.
TEST_F(FSDP, UnitByUnitConstructionEqualsOneProcess) {
  for (bool tied : {true, false}) {
    auto cfg = test::small_model_config();
    cfg.tie_embeddings = tied;
    cfg.stream_offsets = true;
    torch::manual_seed(7);
    SHCTransformer whole(cfg);
    torch::manual_seed(7);
    FullyShardedDataParallel fsdp(parallel::TransformerUnits::builder(cfg), *comm_, nullptr, {});
    const auto params = fsdp.full_parameters();
    const auto expected = whole->named_parameters();
    ASSERT_EQ(params.size(), expected.size());
    for (const auto& [name, value] : params) {
      ASSERT_NE(expected.find(name), nullptr) << name;
      EXPECT_TRUE(torch::equal(value, *expected.find(name))) << name;
    }
    EXPECT_EQ(fsdp.total_numel(), whole->num_parameters());
    EXPECT_EQ(fsdp.model().num_units(), cfg.n_layers + 2);
  }
}

// The communication thread issues ops in queue order (each op's result depends on the previous
// one's), hands an op's exception to the caller's wait(), and then issues nothing more: its group
// may be out of step with the peers, so every later op fails with the first exception.
TEST_F(FSDP, CommunicationThreadIssuesInQueueOrderAndStopsAfterAFailure) {
  parallel::CommunicationThread thread(comm_->split(0, comm_->rank()));
  const auto value = comm_->zeros(1, torch::kDouble);
  std::vector<parallel::CommunicationThread::Handle> handles;
  for (int i = 1; i <= 4; ++i) {
    handles.push_back(thread.submit({value}, [value, i](parallel::Communicator& comm) {
      value.mul_(2).add_(i);
      comm.all_reduce(value, parallel::ReduceOp::kAvg);
    }));
  }
  auto failing =
      thread.submit({}, [](parallel::Communicator&) { throw std::runtime_error("failed op"); });
  auto after = thread.submit({value}, [value](parallel::Communicator&) { value.add_(100); });
  for (const auto& h : handles) h.wait();
  EXPECT_THROW(failing.wait(), std::runtime_error);
  try {
    after.wait();
    ADD_FAILURE() << "an op after a failed one was issued";
  } catch (const std::runtime_error& error) {
    EXPECT_STREQ(error.what(), "failed op");
  }
  EXPECT_EQ(value.item<double>(), 26);  // ((1 * 2 + 2) * 2 + 3) * 2 + 4, and no + 100
}

}  // namespace
}  // namespace shc
