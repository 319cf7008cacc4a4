// `shc selftest`: the first command to run on a new machine or cluster (SPEC §5), because the
// GPU paths cannot run where SHC is developed. Under mpirun/srun, on every device present — the
// CPU with the mpi backend always, and this rank's GPU with nccl in a build with CUDA — it checks:
//   collectives         every collective and dtype against a closed form
//   ddp_step            a DDP training step equals the same step in one process on the CPU, and
//                       every tensor handed to a collective came from the communicator's buffers
//                       (the device rule; CheckingCommunicator)
//   fsdp_step           the same for FSDP (ZeRO-3, built unit by unit): parameters after one SGD
//                       step equal one process's
//   error_propagation   an exception on DDP's communication thread reaches the training thread
//   stream_handoff      (GPU) a buffer still being written on the compute stream is reduced on the
//                       communication thread's side stream only after the writes, and read back
//                       only after the reduction
// It prints one PASS/FAIL line per check (rank 0, stdout; a failing rank also prints its reason
// on stderr) and exits 1 if any check failed on any rank. A check that leaves one rank inside a
// collective ends the job through the watchdog (exit 5, --parallel.timeout_s).
//
// --selftest.abort_path true then makes the last rank throw in the middle of a DDP step: the job
// must end on every rank within seconds with exit code 1 (echo $? after it), NCCL communicators
// aborted first. That is the one check that cannot print its own PASS.
#include <torch/torch.h>

#include <boost/log/trivial.hpp>

#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/transformer.h"
#include "jobs/job.h"
#include "parallel/checking_communicator.h"
#include "parallel/communication_thread.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"
#include "parallel/fsdp.h"
#include "parallel/runtime.h"
#include "parallel/transformer_units.h"

namespace shc::jobs {
namespace {

using parallel::Communicator;
using parallel::ReduceOp;

// What a check found on this rank; it keeps going after a failed expectation so that every rank
// enters the same collectives.
struct Findings {
  std::vector<std::string> failures;
  void expect(bool ok, const std::string& what) {
    if (!ok) failures.push_back(what);
  }
};

// The selftest's model: the tiny preset (every residual path of SHC) with 2 layers, a step in
// milliseconds.
ModelConfig selftest_model() {
  ModelConfig c = get_config("tiny");
  c.n_layers = 2;
  return c;
}

constexpr int64_t kSeqLen = 16;
constexpr uint64_t kModelSeed = 11;  // every copy of the model, on every rank and device

// The same global batch on every rank: 2 rows per rank.
torch::Tensor global_batch(int world) {
  auto gen = at::detail::createCPUGenerator(2024);
  return torch::randint(selftest_model().vocab_size, {2 * world, kSeqLen + 1}, gen);
}

// The largest difference over a model's tensors, relative to the largest value among them:
// parameters that start at zero (the routing projections) differ in round-off only, which a
// per-tensor ratio would blow up.
double relative_error(const std::vector<torch::Tensor>& actual,
                      const std::vector<torch::Tensor>& expected) {
  double difference = 0, scale = 1e-12;
  for (size_t k = 0; k < actual.size(); ++k) {
    const auto e = expected[k].to(torch::kDouble);
    difference = std::max(
        difference, (actual[k].to(torch::kCPU, torch::kDouble) - e).abs().max().item<double>());
    scale = std::max(scale, e.abs().max().item<double>());
  }
  return difference / scale;
}

double relative_error(const torch::Tensor& actual, const torch::Tensor& expected) {
  return relative_error(std::vector<torch::Tensor>{actual}, std::vector<torch::Tensor>{expected});
}

// The selftest model with its seeded initial values, on `device`.
SHCTransformer seeded_model(c10::Device device) {
  torch::manual_seed(kModelSeed);
  SHCTransformer model(selftest_model());
  model->to(device);
  return model;
}

// This rank's 2 rows of the global batch, on the communicator's device.
torch::Tensor rows_of_rank(const torch::Tensor& batch, const Communicator& comm) {
  return batch.narrow(0, 2 * comm.rank(), 2).to(comm.device());
}

// One process on the CPU after forward and backward over the whole batch.
SHCTransformer reference_model(const torch::Tensor& batch) {
  auto model = seeded_model(c10::kCPU);
  model->forward(batch, batch).backward();
  return model;
}

void check_collectives(Communicator& comm, Findings& f) {
  const int size = comm.size(), rank = comm.rank();
  const auto on = [&](at::ScalarType type) {
    return torch::TensorOptions().dtype(type).device(comm.device());
  };
  for (auto type : {torch::kFloat, torch::kDouble, torch::kBFloat16, torch::kLong}) {
    const std::string name = c10::toString(type);
    // Rank r holds r * m + i. Sums are exact in every dtype but bf16 (8 significant bits), which
    // gets bf16's relative resolution.
    const double m = type == torch::kBFloat16 ? 16 : 1000;
    const double tolerance = type == torch::kBFloat16 ? 1e-2 : 0.0;
    const int64_t n = 2 * size;
    auto mine = [&] { return (torch::arange(n, on(torch::kDouble)) + rank * m).to(type); };
    const auto index = torch::arange(n, torch::TensorOptions().dtype(torch::kDouble));
    const double rank_sum = size * (size - 1) / 2.0;
    const auto summed = index * size + rank_sum * m;

    auto t = comm.empty(n, type);
    t.copy_(mine());
    comm.all_reduce(t);
    f.expect(relative_error(t, summed) <= tolerance, name + " all_reduce sum");
    if (type != torch::kLong) {
      t.copy_(mine());
      comm.all_reduce(t, ReduceOp::kAvg);
      f.expect(relative_error(t, summed / size) <= std::max(tolerance, 1e-7),
               name + " all_reduce avg");
    }
    auto input = comm.empty(n, type), chunk = comm.empty(n / size, type);
    input.copy_(mine());
    comm.reduce_scatter(input, chunk);
    f.expect(relative_error(chunk, summed.narrow(0, rank * 2, 2)) <= tolerance,
             name + " reduce_scatter");
    auto gathered = comm.empty(n * size, type), piece = comm.empty(n, type);
    piece.copy_(mine());
    comm.all_gather(piece, gathered);
    const auto all =
        (index.repeat({size}) + torch::arange(size, torch::kDouble).repeat_interleave(n) * m);
    f.expect(relative_error(gathered, all) <= tolerance, name + " all_gather");
    t.copy_(mine());
    comm.broadcast(t, size - 1);
    f.expect(relative_error(t, index + (size - 1) * m) <= tolerance, name + " broadcast");
  }
  comm.barrier();
}

void check_ddp_step(Communicator& comm, Findings& f) {
  const auto batch = global_batch(comm.size());
  std::vector<torch::Tensor> expected;
  for (const auto& p : reference_model(batch)->parameters()) expected.push_back(p.grad());
  auto model = seeded_model(comm.device());
  parallel::CheckingCommunicator checking(comm.split(0, comm.rank()));
  checking.allow(model->parameters());
  {
    parallel::DistributedDataParallel ddp(model->parameters(), checking, /*bucket_mb=*/0.01);
    ddp.broadcast_parameters(0);
    auto rows = rows_of_rank(batch, comm);
    // Each rank's loss is the mean over its rows; DDP averages over ranks: the global mean.
    model->forward(rows, rows).backward();
    ddp.finish_gradient_sync();
  }
  std::vector<torch::Tensor> grads;
  for (const auto& p : model->parameters()) grads.push_back(p.grad());
  const double error = relative_error(grads, expected);
  f.expect(error < 1e-4, "gradients differ from one process by " + std::to_string(error) +
                             " of the largest gradient (limit 1e-4)");
  for (const auto& violation : checking.violations()) f.expect(false, violation);
}

// FSDP (ZeRO-3, built unit by unit) takes one SGD step (lr 0.1 on the shards): the gathered
// parameters must equal one process's parameters after the same step on the whole batch.
void check_fsdp_step(Communicator& comm, Findings& f) {
  constexpr double kLr = 0.1;
  const auto batch = global_batch(comm.size());
  std::map<std::string, torch::Tensor> expected;
  for (const auto& item : reference_model(batch)->named_parameters()) {
    expected[item.key()] = (item.value() - kLr * item.value().grad()).detach();
  }
  parallel::CheckingCommunicator checking(comm.split(0, comm.rank()));
  torch::manual_seed(kModelSeed);
  parallel::FullyShardedDataParallel fsdp(parallel::TransformerUnits::builder(selftest_model()),
                                          checking, nullptr, {});
  fsdp.loss(rows_of_rank(batch, comm)).backward();
  fsdp.finish_step();
  {
    torch::NoGradGuard no_grad;
    for (const auto& shard : fsdp.shards()) {
      if (shard.grad().defined()) shard.sub_(kLr * shard.grad());
    }
  }
  std::vector<torch::Tensor> actual, reference;
  for (const auto& [name, value] : fsdp.full_parameters()) {
    const auto it = expected.find(name);
    if (it == expected.end()) {
      f.expect(false, "FSDP has a parameter '" + name + "' that one process does not");
      continue;
    }
    actual.push_back(value);
    reference.push_back(it->second);
  }
  const double error = relative_error(actual, reference);
  f.expect(error < 1e-4, "parameters after the step differ from one process by " +
                             std::to_string(error) + " of the largest parameter (limit 1e-4)");
  for (const auto& violation : checking.violations()) f.expect(false, violation);
}

// One DDP step whose communication thread throws at its second bucket on this rank when `fail`
// (before entering that all-reduce): the failure surfaces from finish_gradient_sync().
void ddp_step_failing_at_second_bucket(Communicator& comm, bool fail) {
  auto model = seeded_model(comm.device());
  parallel::CheckingCommunicator checking(comm.split(0, comm.rank()));
  if (fail) checking.inject_failure("all_reduce", 2);
  parallel::DistributedDataParallel ddp(model->parameters(), checking, /*bucket_mb=*/0.01);
  auto rows = rows_of_rank(global_batch(comm.size()), comm);
  model->forward(rows, rows).backward();
  ddp.finish_gradient_sync();
}

void check_error_propagation(Communicator& comm, Findings& f) {
  try {
    // Every rank fails: nobody is left inside a collective.
    ddp_step_failing_at_second_bucket(comm, true);
    f.expect(false, "finish_gradient_sync() returned although the communication thread failed");
  } catch (const std::runtime_error& error) {
    f.expect(std::string(error.what()).find("injected failure") != std::string::npos,
             std::string("unexpected error: ") + error.what());
  }
}

void check_stream_handoff(Communicator& comm, Findings& f) {
  parallel::CommunicationThread thread(comm.split(0, comm.rank()));
  auto buffer = comm.zeros(1 << 20, torch::kFloat);
  // Enough work queued on the compute stream that an unordered reduction would read zeros: x
  // stays 1/1024 everywhere through every product.
  auto x = torch::full({1024, 1024}, 1.0f / 1024, torch::TensorOptions().device(comm.device()));
  for (int i = 0; i < 50; ++i) x = torch::matmul(x, x);
  buffer.copy_(x.reshape({-1}) + 1.0f);  // every element 1 + 1/1024
  thread.submit({buffer}, [&](Communicator& side) { side.all_reduce(buffer); }).wait();
  const double expected = comm.size() * (1.0 + 1.0 / 1024);
  const double error = (buffer.to(torch::kDouble) - expected).abs().max().item<double>();
  f.expect(error < 1e-5, "reduced buffer is off by " + std::to_string(error));
}

class SelftestJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    // clang-format off
    options.add_options()
        ("selftest.abort_path", po::value<bool>()->default_value(false),
         "after the checks, the last rank throws inside a DDP step: the job must then end on "
         "every rank within seconds with exit code 1 (check it with echo $?)")
        ("parallel.timeout_s", po::value<double>()->default_value(60.0),
         "a collective unfinished after this many seconds ends the job (exit 5)");
    // clang-format on
  }

  int run(const po::variables_map& vm) override {
    auto& runtime = parallel::Runtime::instance();
    const double timeout_s = vm["parallel.timeout_s"].as<double>();
    runtime.set_collective_timeout(timeout_s);
    torch::set_num_threads(1);
    // Results travel over the CPU group, whatever device a check ran on.
    auto cpu = parallel::make_communicator("mpi", c10::Device(c10::kCPU), {timeout_s});
    std::vector<std::pair<std::string, std::unique_ptr<Communicator>>> devices;
    devices.emplace_back("cpu/mpi", cpu->split(0, cpu->rank()));
    if (runtime.device().is_cuda() && parallel::nccl_available()) {
      devices.emplace_back(runtime.device().str() + "/nccl",
                           parallel::make_communicator("nccl", runtime.device(), {timeout_s}));
    }
    if (runtime.is_root()) {
      std::cout << "shc selftest: " << runtime.world_size() << " rank(s); devices:";
      for (const auto& d : devices) std::cout << " " << d.first;
      std::cout << std::endl;
    }

    int failed = 0;
    const auto run_check = [&](const std::string& device, const std::string& name,
                               const std::function<void(Findings&)>& body) {
      Findings findings;
      try {
        body(findings);
      } catch (const std::exception& error) {
        findings.expect(false, std::string("threw: ") + error.what());
      }
      const double failing_ranks = cpu->all_reduce_scalar(findings.failures.empty() ? 0 : 1);
      for (const auto& failure : findings.failures) {
        std::cerr << "[rank " << runtime.rank() << "] " << device << " " << name << ": " << failure
                  << std::endl;
      }
      if (failing_ranks > 0) ++failed;
      if (runtime.is_root()) {
        std::cout << (failing_ranks > 0 ? "FAIL  " : "PASS  ") << device << "  " << name;
        if (failing_ranks > 0) std::cout << "  (" << failing_ranks << " rank(s); see stderr)";
        std::cout << std::endl;
      }
    };
    for (auto& [device, comm] : devices) {
      run_check(device, "collectives", [&](Findings& f) { check_collectives(*comm, f); });
      run_check(device, "ddp_step", [&](Findings& f) { check_ddp_step(*comm, f); });
      run_check(device, "fsdp_step", [&](Findings& f) { check_fsdp_step(*comm, f); });
      run_check(device, "error_propagation",
                [&](Findings& f) { check_error_propagation(*comm, f); });
      if (comm->device().is_cuda()) {
        run_check(device, "stream_handoff", [&](Findings& f) { check_stream_handoff(*comm, f); });
      }
    }
    if (runtime.is_root()) {
      std::cout << (failed ? std::to_string(failed) + " check(s) FAILED" : "all checks passed")
                << std::endl;
    }
    if (vm["selftest.abort_path"].as<bool>()) abort_path(*devices.back().second);
    return failed ? 1 : kExitOk;
  }

 private:
  // The last rank's DDP communication thread fails while the others wait in that all-reduce:
  // the job ends there (the failing rank's exception goes to the CLI's terminate handler).
  [[noreturn]] static void abort_path(Communicator& comm) {
    auto& runtime = parallel::Runtime::instance();
    if (runtime.is_root()) {
      std::cout << "abort_path: rank " << comm.size() - 1
                << " throws now; the job must end within seconds with exit code 1" << std::endl;
    }
    ddp_step_failing_at_second_bucket(comm, comm.rank() == comm.size() - 1);
    throw std::logic_error("abort_path: the step did not fail");
  }
};

SHC_REGISTER_JOB(SelftestJob, "selftest",
                 "check collectives, DDP/FSDP steps and error paths on the devices present "
                 "(run it first on a new cluster)");

}  // namespace
}  // namespace shc::jobs
