// The library API under data parallelism (SPEC §4.3, §5; issue 12), run under mpirun with 1, 2
// and 4 ranks: models built with the HyperConnections wrapper (frac-connections, mhc, history with
// floor and detached history), an SHCTransformer with hyper-connections injected into its blocks,
// and SHCTransformer with residual = history (floor, keyed Gumbel mixing, detached history) train
// under DDP exactly like one process on the whole batch, and history also under FSDP. As in
// data_parallel_test: fp64, per-step losses to 1e-12 relative and final parameters to 1e-9
// relative (the order of the gradient sums is the only difference); one fp32 run to 1e-5.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/hyper_connections.h"
#include "core/inject.h"
#include "core/transformer.h"
#include "jobs/train_step.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"
#include "parallel/fsdp.h"
#include "parallel/transformer_units.h"
#include "tests/test_model_config.h"
#include "tests/test_models.h"

namespace shc {
namespace {

constexpr int64_t kGlobalBatch = 8, kSteps = 4, kSeqLen = 12;

using test::TanhLinear;

// in -> expand -> 3 wrapped branches -> reduce -> out: a regression model built with the wrapper.
struct WrappedMLPImpl : torch::nn::Module {
  WrappedMLPImpl(int64_t n, const HyperConnectionsOptions& options) : hcs(n, options) {
    in = register_module("in", torch::nn::Linear(6, 16));
    for (int i = 0; i < 3; ++i) {
      blocks.push_back(register_module("block" + std::to_string(i), hcs(16, TanhLinear(16))));
    }
    out = register_module("out", torch::nn::Linear(16, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto s = hcs.expand(in(x));
    for (auto& b : blocks) s = b(s);
    return out(hcs.reduce(s));
  }
  HyperConnections hcs;
  torch::nn::Linear in{nullptr}, out{nullptr};
  std::vector<HyperConnectionBranch> blocks;
};
TORCH_MODULE(WrappedMLP);

// The global batch (one fixed batch, so that a few steps visibly lower the loss): the same rows
// on every rank, whatever the world size; `stream` tells inputs from targets.
torch::Tensor global_rows(int64_t stream, std::vector<int64_t> shape, bool tokens = false) {
  auto g = torch::make_generator<at::CPUGeneratorImpl>(500 + stream);
  return tokens ? torch::randint(61, shape, g) : torch::randn(shape, g, torch::kDouble);
}

struct TrainingRun {
  std::vector<double> losses;
  std::map<std::string, torch::Tensor> params;
};

// kSteps of AdamW (lr 1e-2) on `module`; `local_loss(step, first_row, rows)` is the mean loss of
// this process's rows [first_row, first_row + rows) of the global batch. comm == nullptr: one
// process on the whole batch.
TrainingRun train(torch::nn::Module& module, parallel::Communicator* comm,
                  const std::function<torch::Tensor(int64_t, int64_t, int64_t)>& local_loss) {
  const int world = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  const int64_t rows = kGlobalBatch / world;
  std::unique_ptr<parallel::DistributedDataParallel> ddp;
  if (comm) {
    ddp = std::make_unique<parallel::DistributedDataParallel>(module.parameters(), *comm, 0.01);
    ddp->broadcast_parameters(0);
  }
  torch::optim::AdamW opt(module.parameters(), torch::optim::AdamWOptions(1e-2));
  TrainingRun run;
  for (int64_t step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    auto loss = local_loss(step, rank * rows, rows);
    loss.backward();
    double value = loss.item<double>();
    if (ddp) {
      ddp->finish_gradient_sync();
      value = comm->all_reduce_scalar(value, parallel::ReduceOp::kAvg);
    }
    run.losses.push_back(value);
    opt.step();
  }
  for (const auto& item : module.named_parameters()) {
    run.params[item.key()] = item.value().detach().to(torch::kDouble).clone();
  }
  return run;
}

void expect_same(const TrainingRun& a, const TrainingRun& b, double loss_rel, double param_rel) {
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i) {
    EXPECT_NEAR(a.losses[i], b.losses[i], loss_rel * std::abs(b.losses[i])) << "step " << i + 1;
  }
  ASSERT_EQ(a.params.size(), b.params.size());
  for (const auto& [name, value] : a.params) {
    ASSERT_EQ(b.params.count(name), 1u) << name;
    const auto& want = b.params.at(name);
    const double scale = want.abs().max().item<double>() + 1e-12;
    EXPECT_LE((value - want).abs().max().item<double>() / scale, param_rel) << name;
  }
  // The run must have trained, or equality would prove nothing.
  EXPECT_LT(a.losses.back(), a.losses.front());
}

class LibraryDDP : public ::testing::Test {
 protected:
  void SetUp() override { comm_ = parallel::make_communicator("mpi", torch::kCPU); }
  void TearDown() override { comm_.reset(); }
  std::unique_ptr<parallel::Communicator> comm_;
};

TrainingRun train_wrapped(int64_t n, const HyperConnectionsOptions& options,
                          parallel::Communicator* comm, torch::Dtype dtype = torch::kDouble) {
  torch::manual_seed(21);
  WrappedMLP model(n, options);
  {
    // Off the initial routing (zero projections, Sinkhorn saturated at ~identity), whose
    // near-zero gradients AdamW would turn into +-lr steps decided by round-off.
    torch::NoGradGuard g;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
  }
  model->to(dtype);
  return train(*model, comm, [&](int64_t, int64_t first, int64_t rows) {
    auto x = global_rows(0, {kGlobalBatch, 5, 6}).narrow(0, first, rows).to(dtype);
    auto y = global_rows(1, {kGlobalBatch, 5, 3}).narrow(0, first, rows).to(dtype);
    return torch::mse_loss(model(x), y);
  });
}

TEST_F(LibraryDDP, WrapperTrainsLikeOneProcess) {
  const std::vector<std::pair<std::string, std::pair<int64_t, HyperConnectionsOptions>>> cases = {
      {"shc, 2 streams x 2 fractions",
       {2, HyperConnectionsOptions().kind(ResidualKind::kSHC).num_fracs(2).k_mixture(3)}},
      {"mhc, 4 streams", {4, HyperConnectionsOptions().kind(ResidualKind::kMHC)}},
      {"history, window 3, floor, detached",
       {3, HyperConnectionsOptions()
               .kind(ResidualKind::kHistory)
               .history_floor(0.1)
               .history_detach(true)}},
  };
  for (const auto& [name, c] : cases) {
    SCOPED_TRACE(name);
    expect_same(train_wrapped(c.first, c.second, comm_.get()),
                train_wrapped(c.first, c.second, nullptr), 1e-12, 1e-9);
  }
  // fp32: the same within round-off of the gradient sums.
  const auto o = HyperConnectionsOptions().kind(ResidualKind::kHC).num_fracs(4);
  const auto ddp = train_wrapped(2, o, comm_.get(), torch::kFloat);
  const auto single = train_wrapped(2, o, nullptr, torch::kFloat);
  for (size_t i = 0; i < ddp.losses.size(); ++i) {
    EXPECT_NEAR(ddp.losses[i], single.losses[i], 1e-5 * std::abs(single.losses[i]));
  }
}

TEST_F(LibraryDDP, InjectedTransformerTrainsLikeOneProcess) {
  auto run = [&](parallel::Communicator* comm) {
    torch::manual_seed(22);
    SHCTransformer model(test::small_model_config(ResidualKind::kResidual));
    inject(*model, name_matches("blocks\\.[0-9]+"),
           InjectOptions(32).num_streams(4).connections(
               HyperConnectionsOptions().kind(ResidualKind::kSHC).k_mixture(3)));
    model->to(torch::kDouble);
    return train(*model, comm, [&](int64_t, int64_t first, int64_t rows) {
      auto ids = global_rows(2, {kGlobalBatch, kSeqLen}, true).narrow(0, first, rows);
      return model->forward(ids, ids);
    });
  };
  expect_same(run(comm_.get()), run(nullptr), 1e-12, 1e-9);
}

// SHCTransformer with residual = history, the random options on: the Gumbel noise is keyed by
// global sequence index (as the trainer does), so any world size draws the same numbers.
ModelConfig history_model_config() {
  auto cfg = test::small_model_config(ResidualKind::kHistory);
  cfg.n_streams = 3;
  cfg.history_floor = 0.1;
  cfg.history_tau = 0.7;
  cfg.history_detach = true;
  return cfg;
}

torch::Tensor history_batch() {
  return global_rows(3, {kGlobalBatch, kSeqLen}, true);
}

void key_noise(SHCTransformer& model, int64_t step, int64_t first, int64_t rows) {
  model->set_gumbel_noise(
      GumbelNoiseKey{99, step, torch::arange(first, first + rows, torch::kLong)});
}

TEST_F(LibraryDDP, HistoryTransformerUnderDDPAndFSDPEqualsOneProcess) {
  auto plain = [&](parallel::Communicator* comm) {
    torch::manual_seed(23);
    SHCTransformer model(history_model_config());
    model->to(torch::kDouble);
    return train(*model, comm, [&](int64_t step, int64_t first, int64_t rows) {
      key_noise(model, step, first, rows);
      auto ids = history_batch().narrow(0, first, rows);
      return model->forward(ids, ids);
    });
  };
  const auto single = plain(nullptr);
  expect_same(plain(comm_.get()), single, 1e-12, 1e-9);

  // FSDP (ZeRO-3: every unit recomputed in backward, which must replay the same noise), micro-
  // batches of one row: gradients reduce-scattered per micro-batch accumulate in the shards.
  torch::manual_seed(23);
  SHCTransformer model(history_model_config());
  model->to(torch::kDouble);
  parallel::FullyShardedDataParallel fsdp(std::make_shared<parallel::TransformerUnits>(model),
                                          *comm_, nullptr,
                                          parallel::FullyShardedDataParallel::Options{true});
  torch::optim::AdamW opt(fsdp.shards(), torch::optim::AdamWOptions(1e-2).weight_decay(0.0));
  const int64_t rows = kGlobalBatch / comm_->size(), first = comm_->rank() * rows;
  TrainingRun sharded;
  for (int64_t step = 0; step < kSteps; ++step) {
    fsdp.zero_grad();
    const double loss = jobs::accumulate_gradients(
        [&](const torch::Tensor& ids) { return fsdp.loss(ids); },
        history_batch().narrow(0, first, rows), 1, jobs::Precision::kFp32, {},
        [&](int64_t row) { key_noise(model, step, first + row, 1); });
    fsdp.finish_step();
    // AdamW's decoupled decay (0.01, torch's default in the other runs) on every parameter.
    {
      torch::NoGradGuard g;
      for (auto& shard : fsdp.shards()) shard.mul_(1 - 1e-2 * 1e-2);
    }
    sharded.losses.push_back(comm_->all_reduce_scalar(loss, parallel::ReduceOp::kAvg));
    opt.step();
  }
  for (const auto& [name, value] : fsdp.full_parameters()) {
    sharded.params[name] = value.to(torch::kDouble);
  }
  expect_same(sharded, single, 1e-12, 1e-9);
}

}  // namespace
}  // namespace shc
