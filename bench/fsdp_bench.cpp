// FSDP benchmark (issue 7; SPEC §5, §12). Not a test: run it by hand under mpirun, e.g.
//   mpirun -np 2 --bind-to core build/bin/fsdp_bench --out runs/bench/fsdp_bench.json
//   mpirun -np 4 --oversubscribe --bind-to none build/bin/fsdp_bench --preset 500m --batch 1
//       --steps 1 --warmup 0 --configs zero3 --out runs/bench/fsdp_500m.json   (one line)
// (as root, OpenMPI also wants OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1).
//
// Every configuration trains the preset (default `small`) for --warmup + --steps steps on random
// tokens (per-rank batch --batch x --seq_len, one micro-batch, --threads intra-op threads) with
// AdamW: ddp (the reference), zero3 (FSDP, reshard after forward), zero2 (keep gathered until
// backward), each in fp32 and bf16 (autocast compute; fp32 weights, gradients and AdamW state).
// For each, over the measured steps:
//   step      median over steps of the slowest rank's step time (zero_grad, forward, backward,
//             gradient reduction, AdamW; steps start after a barrier)
//   exposed   sum(wait) / sum(comm) over ranks and steps: the share of communication time the
//             training thread spent blocked (communication_thread.h timers; target <= 20 %)
//   peak      the largest count of live CPU tensor bytes on any rank during the configuration,
//             above what was live before it (a counting allocator: LibTorch's own ~0.5 GB of
//             runtime and other configurations' leftovers do not count), activations included
//   ideal     (params + grads + AdamW m and v) / N + the largest unit gathered, all fp32:
//             16 B x params / N + 4 B x largest unit (DDP: 16 B x params); target peak <= 1.3x
// FSDP models are built unit by unit (sharded initialisation), as `shc train` builds them.
//
// Options: --preset NAME (small)  --batch N (4)  --seq_len N (128)  --steps N (6)  --warmup N (2)
//          --threads N (1)  --seed N (1)  --configs LIST (ddp,zero3,zero2,ddp-bf16,zero3-bf16,
//          zero2-bf16)  --out FILE.json
#include <mpi.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/config.h"
#include "core/precision.h"
#include "core/transformer.h"
#include "jobs/counting_allocator.h"
#include "jobs/train_step.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"
#include "parallel/fsdp.h"
#include "parallel/runtime.h"
#include "parallel/transformer_units.h"

namespace {

using shc::parallel::Communicator;
using shc::parallel::DistributedDataParallel;
using shc::parallel::FullyShardedDataParallel;

struct Options {
  std::string preset = "small";
  int64_t batch = 4, seq_len = 128;
  int steps = 6, warmup = 2, threads = 1;
  uint64_t seed = 1;
  std::vector<std::string> configs{"ddp", "zero3", "zero2", "ddp-bf16", "zero3-bf16", "zero2-bf16"};
  std::string out;
};

Options parse(int argc, char** argv) {
  Options o;
  shc::bench::parse_options(
      argc, argv,
      "usage: fsdp_bench [--preset small] [--batch 4] [--seq_len 128] [--steps 6] [--warmup 2] "
      "[--threads 1] [--seed 1] [--configs ddp,zero3,zero2,ddp-bf16,zero3-bf16,zero2-bf16] "
      "[--out FILE.json]",
      [&](const std::string& key, const std::string& value) {
        if (key == "--preset") {
          o.preset = value;
        } else if (key == "--batch") {
          o.batch = std::stoll(value);
        } else if (key == "--seq_len") {
          o.seq_len = std::stoll(value);
        } else if (key == "--steps") {
          o.steps = std::stoi(value);
        } else if (key == "--warmup") {
          o.warmup = std::stoi(value);
        } else if (key == "--threads") {
          o.threads = std::stoi(value);
        } else if (key == "--seed") {
          o.seed = std::stoull(value);
        } else if (key == "--configs") {
          o.configs.clear();
          std::stringstream list(value);
          for (std::string item; std::getline(list, item, ',');) o.configs.push_back(item);
        } else if (key == "--out") {
          o.out = value;
        } else {
          return false;
        }
        return true;
      });
  if (o.steps < 1 || o.warmup < 0 || o.batch < 1 || o.seq_len < 1 || o.threads < 1) {
    throw std::invalid_argument("options out of range (see --help)");
  }
  for (const auto& c : o.configs) {
    if (c != "ddp" && c != "zero3" && c != "zero2" && c != "ddp-bf16" && c != "zero3-bf16" &&
        c != "zero2-bf16") {
      throw std::invalid_argument("unknown configuration '" + c + "' (see --help)");
    }
  }
  return o;
}

double max_over_ranks(double value) {
  return shc::bench::over_ranks({value}, MPI_MAX)[0];
}

double sum_over_ranks(double value) {
  return shc::bench::over_ranks({value}, MPI_SUM)[0];
}

struct Result {
  std::string config;
  double step_s = 0, comm_s = 0, wait_s = 0;
  double peak_bytes = 0, ideal_bytes = 0;
};

Result run(const Options& o, const std::string& config, Communicator& world) {
  const bool bf16 = config.size() > 5 && config.substr(config.size() - 5) == "-bf16";
  const std::string strategy = config.substr(0, config.find('-'));
  const auto precision = bf16 ? shc::jobs::Precision::kBf16 : shc::jobs::Precision::kFp32;
  const int n = world.size(), rank = world.rank();
  auto& counter = shc::jobs::CountingCpuAllocator::install();
  MPI_Barrier(MPI_COMM_WORLD);
  const int64_t live_before = counter.live_bytes();
  counter.reset_peak();

  Result r;
  r.config = config;
  const auto cfg = shc::get_config(o.preset);
  {
    torch::manual_seed(o.seed);
    std::unique_ptr<DistributedDataParallel> ddp;
    std::unique_ptr<FullyShardedDataParallel> fsdp;
    shc::SHCTransformer model{nullptr};
    std::unique_ptr<torch::optim::Optimizer> optimizer;
    shc::jobs::AdamWSettings adamw;
    if (strategy == "ddp") {
      model = shc::SHCTransformer(cfg);
      ddp = std::make_unique<DistributedDataParallel>(model->parameters(), world);
      optimizer = shc::jobs::make_adamw(*model, adamw);
      r.ideal_bytes = 16.0 * double(model->num_parameters());
    } else {
      fsdp = std::make_unique<FullyShardedDataParallel>(
          shc::parallel::TransformerUnits::builder(cfg), world, nullptr,
          FullyShardedDataParallel::Options{strategy == "zero3"});
      optimizer = std::make_unique<torch::optim::AdamW>(
          fsdp->shards(), torch::optim::AdamWOptions(adamw.lr).weight_decay(0.0));
      r.ideal_bytes =
          16.0 * double(fsdp->total_numel()) / n + 4.0 * double(fsdp->largest_unit_numel());
    }
    const shc::jobs::MicroBatchLoss loss_of = [&](const torch::Tensor& ids) {
      return fsdp ? fsdp->loss(ids) : model->forward(ids, ids);
    };
    std::vector<double> steps;
    for (int step = 0; step < o.warmup + o.steps; ++step) {
      if (step == o.warmup) (ddp ? ddp->reset_timers() : fsdp->reset_timers());
      auto gen = at::detail::createCPUGenerator(o.seed * 1000 + step);
      auto batch = torch::randint(cfg.vocab_size, {o.batch * n, o.seq_len + 1}, gen)
                       .narrow(0, rank * o.batch, o.batch);
      MPI_Barrier(MPI_COMM_WORLD);
      const auto start = std::chrono::steady_clock::now();
      optimizer->zero_grad();
      if (fsdp) fsdp->zero_grad();
      shc::jobs::accumulate_gradients(loss_of, batch, o.batch, precision);
      if (ddp) ddp->finish_gradient_sync();
      if (fsdp) {
        fsdp->finish_step();
        fsdp->apply_weight_decay(adamw.lr, adamw.weight_decay);
      }
      optimizer->step();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (step >= o.warmup) steps.push_back(max_over_ranks(seconds));
    }
    r.step_s = shc::bench::median(steps);
    r.comm_s = sum_over_ranks(ddp ? ddp->comm_seconds() : fsdp->comm_seconds());
    r.wait_s = sum_over_ranks(ddp ? ddp->wait_seconds() : fsdp->wait_seconds());
  }
  r.peak_bytes = max_over_ranks(double(counter.peak_bytes() - live_before));
  return r;
}

std::string format_ratio(double ratio) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << ratio;
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const shc::bench::HelpRequested& help) {
    std::cout << help.what() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 2;
  }
  auto& runtime = shc::parallel::Runtime::instance();
  torch::set_num_threads(o.threads);
  shc::jobs::CountingCpuAllocator::install();
  auto world = shc::parallel::make_communicator("mpi", torch::kCPU);

  std::vector<Result> results;
  for (const auto& config : o.configs) {
    results.push_back(run(o, config, *world));
    if (runtime.is_root()) std::cerr << "done: " << config << std::endl;
  }
  if (!runtime.is_root()) return 0;

  double ddp_step = 0;
  for (const auto& r : results) {
    if (r.config == "ddp") ddp_step = r.step_s;
  }
  const double mib = 1024.0 * 1024.0;
  std::cout << "fsdp_bench: preset " << o.preset << ", " << runtime.world_size() << " ranks, batch "
            << o.batch << " x " << o.seq_len << " per rank, " << o.threads << " thread(s), "
            << o.steps << " measured steps\n"
            << std::left << std::setw(12) << "config" << std::right << std::setw(10) << "step s"
            << std::setw(9) << "vs ddp" << std::setw(12) << "comm s/st" << std::setw(10)
            << "exposed" << std::setw(11) << "peak MiB" << std::setw(11) << "ideal MiB"
            << std::setw(12) << "peak/ideal"
            << "\n";
  nlohmann::json report = {{"preset", o.preset},
                           {"ranks", runtime.world_size()},
                           {"batch", o.batch},
                           {"seq_len", o.seq_len},
                           {"threads", o.threads},
                           {"steps", o.steps},
                           {"results", nlohmann::json::array()}};
  for (const auto& r : results) {
    const double per_step_comm = r.comm_s / runtime.world_size() / o.steps;
    const double exposed = r.comm_s > 0 ? r.wait_s / r.comm_s : 0;
    std::cout << std::left << std::setw(12) << r.config << std::right << std::fixed
              << std::setprecision(3) << std::setw(10) << r.step_s << std::setw(9)
              << (ddp_step > 0 ? format_ratio(r.step_s / ddp_step) : std::string("-"))
              << std::setw(12) << std::setprecision(3) << per_step_comm << std::setw(9)
              << std::setprecision(1) << 100 * exposed << "%" << std::setw(11)
              << std::setprecision(1) << r.peak_bytes / mib << std::setw(11) << r.ideal_bytes / mib
              << std::setw(12) << std::setprecision(2) << r.peak_bytes / r.ideal_bytes << "\n";
    report["results"].push_back({{"config", r.config},
                                 {"step_s", r.step_s},
                                 {"step_vs_ddp", ddp_step > 0 ? nlohmann::json(r.step_s / ddp_step)
                                                              : nlohmann::json(nullptr)},
                                 {"comm_s_per_step", per_step_comm},
                                 {"exposed_communication", exposed},
                                 {"peak_bytes", r.peak_bytes},
                                 {"ideal_bytes", r.ideal_bytes},
                                 {"peak_vs_ideal", r.peak_bytes / r.ideal_bytes}});
  }
  if (!o.out.empty()) std::ofstream(o.out) << report.dump(2) << "\n";
  return 0;
}
