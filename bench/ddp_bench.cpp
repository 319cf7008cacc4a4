// DDP benchmarks (issue 4; SPEC §5, §12). Not a test: run it by hand under mpirun, e.g.
//   mpirun -np 2 --bind-to core build/bin/ddp_bench --out runs/bench/ddp_bench.json
// (as root, OpenMPI also wants OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1).
// Three measurements, every rank taking part, rank 0 printing a table and writing JSON:
//
// (a) All-reduce bandwidth. B = the fp32 gradient bytes of the preset's model (or --allreduce_mb),
//     reduced (i) by one raw MPI_Allreduce(MPI_IN_PLACE, MPI_FLOAT, MPI_SUM) on one flat buffer
//     of B bytes (the reference; also, for reading the result, raw MPI_Allreduce on buffers of
//     DDP's bucket sizes one after another), (ii) by DistributedDataParallel itself: gradients are
//     set on the parameters and finish_gradient_sync() is timed with no backward before it, so it
//     fills, launches and reduces every bucket (the same code path a step takes for buckets whose
//     gradients never arrived, and the same all-reduce call the communication thread makes for
//     every bucket). We time the real DDP rather than re-implementing its buckets: what is measured
//     is what training runs. No backward runs, so only finish_gradient_sync's own copying of the
//     next bucket shares the core with a bucket's all-reduce. Two figures come out of (ii): "ddp
//     buckets" = B / the time DDP's communication thread spent inside
//     Communicator::all_reduce(bucket, kAvg) (comm_seconds(): the bucket collectives with their
//     averaging division, watchdog bookkeeping and thread hand-off; the headline figure against the
//     >= 90 % target), and "ddp sync wall" = B / the whole finish_gradient_sync() (adds copying
//     .grad into the buckets and the averages back, two more passes over B). (iii) "comm buckets" =
//     the same bucket sizes (DDP's partition rule, recomputed here and checked against
//     num_buckets()) all-reduced one after another through a Communicator from the main thread: the
//     bucketing cost alone, without DDP's thread. Algorithm bandwidth = B / time (GB/s, 1e9 bytes);
//     times are the maximum over ranks of each repetition, then the median over repetitions; every
//     repetition starts after a barrier.
//
// (b) Overlap. --steps training steps of the preset (default `small`, fp32, seq_len 128, per-rank
//     batch 4 in one micro-batch, --threads 1 intra-op thread) with jobs::accumulate_gradients +
//     DDP (default 25 MB buckets) + AdamW, random tokens. hidden = 1 - sum(wait) / sum(comm) over
//     ranks and measured steps (DistributedDataParallel::wait_seconds / comm_seconds). With one
//     core per rank the communication thread shares its core with backward, so a bucket's
//     all-reduce is stretched while it overlaps; "comm per step" against (a)'s raw time shows that.
//
// (c) Weak scaling. First rank 0 alone trains the same model, batch and threads with no DDP (a
//     plain single-process step) while the other ranks sleep (polling an MPI_Ibarrier every ms, so
//     they leave their cores idle): t1 = its median step time. Then all ranks train with DDP:
//     t_N = median over steps of the slowest rank's step time (steps start after a barrier).
//     Efficiency = t1 / t_N at the same per-rank batch. Step = zero_grad + forward + backward +
//     finish_gradient_sync + AdamW step; the first --warmup steps are not counted. Diagnostic in
//     between: every rank trains alone at the same time without DDP (t_indep), which separates
//     what sharing the machine costs (t1 / t_indep) from what DDP costs (t_indep / t_N). Run it
//     with -np 1 as well to see DDP's own cost on one rank.
//
// Options: --preset NAME (small)  --allreduce_mb MB (0 = the model's gradient bytes)
//          --bucket_mb MB (25)  --reps N (10, for (a))  --steps N (12; 0 skips (b) and (c))
//          --warmup N (2)  --batch N (4)  --seq_len N (128)  --threads N (1)  --seed N (1)
//          --out FILE.json
#include <mpi.h>
#include <sched.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "core/config.h"
#include "core/transformer.h"
#include "jobs/train_step.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"
#include "parallel/runtime.h"

namespace {

using shc::bench::median;
using shc::bench::over_ranks;
using shc::parallel::Communicator;
using shc::parallel::DistributedDataParallel;
using shc::parallel::ReduceOp;

struct Options {
  std::string preset = "small";
  double allreduce_mb = 0;
  double bucket_mb = 25;
  int reps = 10;
  int steps = 12;
  int warmup = 2;
  int64_t batch = 4;
  int64_t seq_len = 128;
  int threads = 1;
  uint64_t seed = 1;
  std::string out;
};

Options parse(int argc, char** argv) {
  Options o;
  shc::bench::parse_options(
      argc, argv,
      "usage: ddp_bench [--preset small] [--allreduce_mb 0] [--bucket_mb 25] [--reps 10] "
      "[--steps 12] [--warmup 2] [--batch 4] [--seq_len 128] [--threads 1] [--seed 1] "
      "[--out FILE.json]",
      [&](const std::string& key, const std::string& value) {
        if (key == "--preset") {
          o.preset = value;
        } else if (key == "--allreduce_mb") {
          o.allreduce_mb = std::stod(value);
        } else if (key == "--bucket_mb") {
          o.bucket_mb = std::stod(value);
        } else if (key == "--reps") {
          o.reps = std::stoi(value);
        } else if (key == "--steps") {
          o.steps = std::stoi(value);
        } else if (key == "--warmup") {
          o.warmup = std::stoi(value);
        } else if (key == "--batch") {
          o.batch = std::stoll(value);
        } else if (key == "--seq_len") {
          o.seq_len = std::stoll(value);
        } else if (key == "--threads") {
          o.threads = std::stoi(value);
        } else if (key == "--seed") {
          o.seed = std::stoull(value);
        } else if (key == "--out") {
          o.out = value;
        } else {
          return false;
        }
        return true;
      });
  if (o.reps < 1 || o.steps < 0 || o.warmup < 0 || o.batch < 1 || o.seq_len < 1 || o.threads < 1 ||
      o.bucket_mb <= 0 || o.allreduce_mb < 0) {
    throw std::invalid_argument("options out of range (see --help)");
  }
  return o;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<double> gather_to_root(double value) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  std::vector<double> all(static_cast<size_t>(world));
  MPI_Gather(&value, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  return all;
}

int64_t total_bytes(const std::vector<torch::Tensor>& params) {
  int64_t bytes = 0;
  for (const auto& p : params) bytes += p.numel() * p.element_size();
  return bytes;
}

// DDP's bucket partition (parallel/ddp.cpp): reverse registration order, a new bucket once the
// current one holds >= bucket_mb (all parameters here are fp32 on the CPU). Returns numels.
std::vector<int64_t> bucket_numels(const std::vector<torch::Tensor>& params, double bucket_mb) {
  const double limit = bucket_mb * 1024.0 * 1024.0;
  std::vector<int64_t> numels;
  double bytes = limit;
  for (size_t k = params.size(); k-- > 0;) {
    if (bytes >= limit) {
      numels.push_back(0);
      bytes = 0;
    }
    numels.back() += params[k].numel();
    bytes += double(params[k].numel() * params[k].element_size());
  }
  return numels;
}

struct AllReduceResult {
  int64_t bytes = 0;
  size_t buckets = 0;
  double raw_s = 0, raw_buckets_s = 0, ddp_comm_s = 0, ddp_wall_s = 0, comm_buckets_s = 0;
  bool correct = true;
};

// (a): see the header comment.
AllReduceResult bench_allreduce(const Options& o, const std::vector<torch::Tensor>& params,
                                Communicator& world_comm, Communicator& ddp_comm) {
  torch::NoGradGuard no_grad;
  const int rank = world_comm.rank(), world = world_comm.size();
  AllReduceResult r;
  r.bytes = total_bytes(params);
  const int64_t numel = r.bytes / 4;
  const float expected = 0.5f * float(world + 1);  // mean of rank + 1 over the ranks

  // (i) Raw MPI_Allreduce, in place like the communicator's (chunked only beyond INT_MAX): on one
  // buffer of all the bytes (the reference), and on buffers of the bucket sizes one after another
  // (separates the effect of message size from that of DDP's own machinery).
  const auto numels = bucket_numels(params, o.bucket_mb);
  auto raw_allreduce = [&](const std::vector<int64_t>& sizes) {
    std::vector<torch::Tensor> flats;
    for (int64_t n : sizes) flats.push_back(torch::empty({n}, torch::kFloat));
    std::vector<double> times;
    for (int rep = 0; rep < o.reps + 1; ++rep) {
      for (auto& f : flats) f.fill_(float(rank + 1));
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = now();
      for (auto& f : flats) {
        for (int64_t offset = 0; offset < f.numel(); offset += INT32_MAX) {
          const int count = static_cast<int>(std::min<int64_t>(INT32_MAX, f.numel() - offset));
          MPI_Allreduce(MPI_IN_PLACE, f.data_ptr<float>() + offset, count, MPI_FLOAT, MPI_SUM,
                        MPI_COMM_WORLD);
        }
      }
      if (rep > 0) times.push_back(now() - t0);  // the first one warms up (page faults, MPI)
      for (auto& f : flats) {
        r.correct = r.correct && (f - float(world) * expected).abs().max().item<float>() == 0.0f;
      }
    }
    return times;
  };
  const auto raw = raw_allreduce({numel});
  const auto raw_buckets = raw_allreduce(numels);

  // (ii) DistributedDataParallel::finish_gradient_sync() on gradients set by hand.
  std::vector<double> ddp_comm_t, ddp_wall_t;
  {
    DistributedDataParallel ddp(params, ddp_comm, o.bucket_mb);
    r.buckets = ddp.num_buckets();
    for (int rep = 0; rep < o.reps + 1; ++rep) {
      for (const auto& p : params) {
        auto& g = p.mutable_grad();
        if (g.defined()) {
          g.fill_(float(rank + 1));
        } else {
          g = torch::full_like(p, float(rank + 1));
        }
      }
      MPI_Barrier(MPI_COMM_WORLD);
      const double c0 = ddp.comm_seconds(), t0 = now();
      ddp.finish_gradient_sync();
      const double wall = now() - t0;
      if (rep > 0) {
        ddp_wall_t.push_back(wall);
        ddp_comm_t.push_back(ddp.comm_seconds() - c0);
      }
      for (const auto& p : params) {
        r.correct = r.correct && (p.grad() - expected).abs().max().item<float>() == 0.0f;
      }
    }
    for (const auto& p : params) p.mutable_grad() = torch::Tensor();
  }

  // (iii) The same buckets through the Communicator, from this thread.
  std::vector<double> comm_t;
  {
    if (numels.size() != r.buckets) {
      throw std::logic_error("bucket partition differs from DistributedDataParallel's");
    }
    std::vector<torch::Tensor> flats;
    for (int64_t n : numels) flats.push_back(torch::empty({n}, torch::kFloat));
    for (int rep = 0; rep < o.reps + 1; ++rep) {
      for (auto& f : flats) f.fill_(float(rank + 1));
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = now();
      for (auto& f : flats) world_comm.all_reduce(f, ReduceOp::kAvg);
      if (rep > 0) comm_t.push_back(now() - t0);
      for (auto& f : flats) {
        r.correct = r.correct && (f - expected).abs().max().item<float>() == 0.0f;
      }
    }
  }

  r.raw_s = median(over_ranks(raw, MPI_MAX));
  r.raw_buckets_s = median(over_ranks(raw_buckets, MPI_MAX));
  r.ddp_comm_s = median(over_ranks(ddp_comm_t, MPI_MAX));
  r.ddp_wall_s = median(over_ranks(ddp_wall_t, MPI_MAX));
  r.comm_buckets_s = median(over_ranks(comm_t, MPI_MAX));
  int ok = r.correct ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  r.correct = ok == 1;
  return r;
}

struct TrainResult {
  std::vector<double> step_s;       // per measured step (max over ranks for DDP)
  double comm_s = 0, wait_s = 0;    // this rank, summed over measured steps
  std::vector<double> comm_step_s;  // this rank, per measured step
  double last_loss = 0;
};

// (b)/(c): trains o.warmup + o.steps steps, with DDP over `comm` unless it is null. `together`:
// every rank trains, steps start after a barrier and a step's time is the slowest rank's.
TrainResult train(const Options& o, Communicator* comm, bool together, int rank) {
  torch::manual_seed(o.seed);
  shc::SHCTransformer model(shc::get_config(o.preset));
  std::unique_ptr<DistributedDataParallel> ddp;
  if (comm) {
    ddp = std::make_unique<DistributedDataParallel>(model->parameters(), *comm, o.bucket_mb);
    ddp->broadcast_parameters(0);
  }
  auto optimizer = shc::jobs::make_adamw(*model, shc::jobs::AdamWSettings{});
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(o.seed + 1000 + rank);
  const int64_t vocab = model->config().vocab_size;
  TrainResult r;
  std::vector<double> step_s;
  for (int step = 0; step < o.warmup + o.steps; ++step) {
    const auto batch = torch::randint(vocab, {o.batch, o.seq_len + 1}, gen);
    if (together) MPI_Barrier(MPI_COMM_WORLD);
    const double c0 = ddp ? ddp->comm_seconds() : 0, w0 = ddp ? ddp->wait_seconds() : 0;
    const double t0 = now();
    optimizer->zero_grad();
    r.last_loss = shc::jobs::accumulate_gradients(model, batch, o.batch,
                                                  shc::jobs::Precision::kFp32, [&](bool last) {
                                                    if (ddp) ddp->set_sync(last);
                                                  });
    if (ddp) ddp->finish_gradient_sync();
    optimizer->step();
    const double t = now() - t0;
    if (step < o.warmup) continue;
    step_s.push_back(t);
    if (ddp) {
      r.comm_s += ddp->comm_seconds() - c0;
      r.wait_s += ddp->wait_seconds() - w0;
      r.comm_step_s.push_back(ddp->comm_seconds() - c0);
    }
  }
  r.step_s = together ? over_ranks(step_s, MPI_MAX) : step_s;
  return r;
}

// A barrier that sleeps instead of spinning: the other ranks wait in it while rank 0 trains alone,
// leaving their cores idle.
void idle_until_all_arrive() {
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  int done = 0;
  while (!done) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
  return CPU_COUNT(&set);
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

double gbps(int64_t bytes, double seconds) {
  return seconds > 0 ? double(bytes) / seconds / 1e9 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto& runtime = shc::parallel::Runtime::instance();
  const int rank = runtime.rank(), world = runtime.world_size();
  Options o;
  try {
    o = parse(argc, argv);
    shc::get_config(o.preset);  // validates the name
  } catch (const shc::bench::HelpRequested& help) {
    if (rank == 0) std::cout << help.what() << "\n";
    return 0;
  } catch (const std::exception& e) {
    if (rank == 0) std::cerr << e.what() << "\n";
    return 2;
  }
  torch::set_num_threads(o.threads);
  const std::string load_at_start = load_average();
  const auto cpus = gather_to_root(double(allowed_cpus()));

  // Collectives of the world (barriers aside, which go through MPI directly) and DDP's own group.
  auto world_comm = shc::parallel::make_communicator("mpi", torch::kCPU);
  auto ddp_comm = world_comm->split(0, rank);

  // (a) on the preset's parameters, or on --allreduce_mb of 4 MiB tensors.
  AllReduceResult ar;
  {
    torch::manual_seed(o.seed);
    std::vector<torch::Tensor> params;
    shc::SHCTransformer model{nullptr};
    if (o.allreduce_mb > 0) {
      const int64_t total = static_cast<int64_t>(o.allreduce_mb * 1024 * 1024 / 4);
      for (int64_t done = 0; done < total; done += 1 << 20) {
        params.push_back(torch::zeros({std::min<int64_t>(1 << 20, total - done)}, torch::kFloat)
                             .requires_grad_(true));
      }
    } else {
      model = shc::SHCTransformer(shc::get_config(o.preset));
      params = model->parameters();
    }
    ar = bench_allreduce(o, params, *world_comm, *ddp_comm);
  }

  // (c) baseline: rank 0 alone, no DDP; then (b) and (c): every rank with DDP.
  // Diagnostic between the two: every rank trains alone at once, no DDP (what sharing the machine
  // costs without any communication).
  TrainResult single, independent, ddp;
  if (o.steps > 0) {
    // A nonblocking barrier matches only nonblocking barriers, so rank 0 joins with one too.
    if (rank == 0) single = train(o, nullptr, false, 0);
    idle_until_all_arrive();
    if (world > 1) independent = train(o, nullptr, true, rank);
    ddp = train(o, ddp_comm.get(), true, rank);
  }
  const auto comm_by_rank = gather_to_root(ddp.comm_s);
  const auto wait_by_rank = gather_to_root(ddp.wait_s);
  const auto comm_step_by_rank = gather_to_root(median(ddp.comm_step_s));
  const std::string load_at_end = load_average();
  ddp_comm.reset();
  world_comm.reset();
  if (rank != 0) return 0;

  double comm_total = 0, wait_total = 0;
  for (int r = 0; r < world; ++r) {
    comm_total += comm_by_rank[r];
    wait_total += wait_by_rank[r];
  }
  const double hidden = comm_total > 0 ? 1.0 - wait_total / comm_total : 0;
  const double t1 = median(single.step_s), tn = median(ddp.step_s);
  const double efficiency = tn > 0 ? t1 / tn : 0;
  const double ti = median(independent.step_s);
  const auto cfg = shc::get_config(o.preset);
  const int64_t tokens = o.batch * o.seq_len;

  std::printf("ddp_bench: %d rank(s), %d intra-op thread(s) each, cpus allowed per rank:", world,
              o.threads);
  for (double c : cpus) std::printf(" %g", c);
  std::printf("; load average at start %s\n", load_at_start.c_str());
  std::printf("\n(a) all-reduce of %.1f MB (%s), %zu bucket(s) of <= %g MB, median of %d\n",
              ar.bytes / 1e6, o.allreduce_mb > 0 ? "--allreduce_mb" : cfg.summary().c_str(),
              ar.buckets, o.bucket_mb, o.reps);
  std::printf("  %-38s %10s %10s %9s\n", "path", "ms", "GB/s", "vs raw");
  auto row = [&](const char* name, double s) {
    std::printf("  %-38s %10.2f %10.2f %8.1f%%\n", name, s * 1e3, gbps(ar.bytes, s),
                s > 0 ? 100.0 * ar.raw_s / s : 0.0);
  };
  row("raw MPI_Allreduce, one buffer", ar.raw_s);
  row("raw MPI_Allreduce, bucket-sized buffers", ar.raw_buckets_s);
  row("ddp buckets (comm thread, comm_seconds)", ar.ddp_comm_s);
  row("ddp finish_gradient_sync (wall)", ar.ddp_wall_s);
  row("communicator buckets (main thread)", ar.comm_buckets_s);
  std::printf("  results %s\n", ar.correct ? "correct (mean of the ranks)" : "WRONG");
  if (o.steps > 0) {
    std::printf("\n(b, c) %s, fp32, per-rank batch %lld x %lld tokens, %d steps after %d warm-up\n",
                cfg.summary().c_str(), static_cast<long long>(o.batch),
                static_cast<long long>(o.seq_len), o.steps, o.warmup);
    std::printf("  1 rank, no DDP (rank 0 alone):  %8.3f s/step  %8.0f tokens/s\n", t1,
                tokens / t1);
    if (world > 1) {
      std::printf(
          "  %d ranks, each alone, no DDP:    %8.3f s/step  (diagnostic: t1 / this = %.1f%%)\n",
          world, ti, 100.0 * t1 / ti);
    }
    std::printf("  %d rank(s), DDP (slowest rank):  %8.3f s/step  %8.0f tokens/s (all ranks)\n",
                world, tn, world * tokens / tn);
    std::printf("  last loss: 1 rank %.3f, DDP rank 0 %.3f (random tokens: ln 257 = 5.55)\n",
                single.last_loss, ddp.last_loss);
    std::printf("  weak-scaling efficiency t1 / t%d = %.1f%%\n", world, 100.0 * efficiency);
    std::printf(
        "  communication per step (rank 0, median) %.1f ms; raw all-reduce of the same "
        "bytes %.1f ms\n",
        comm_step_by_rank[0] * 1e3, ar.raw_s * 1e3);
    std::printf("  exposed wait per step (mean over ranks) %.1f ms\n",
                1e3 * wait_total / (world * o.steps));
    std::printf("  hidden behind backward: 1 - wait/comm = 1 - %.3f/%.3f s = %.1f%% (per rank:",
                wait_total, comm_total, 100.0 * hidden);
    for (int r = 0; r < world; ++r) {
      std::printf(" %.1f%%",
                  comm_by_rank[r] > 0 ? 100.0 * (1 - wait_by_rank[r] / comm_by_rank[r]) : 0.0);
    }
    std::printf(")\n");
  }
  std::printf("load average at end %s\n", load_at_end.c_str());

  if (!o.out.empty()) {
    auto ratio = [](double num, double den) { return den > 0 ? num / den : 0.0; };
    nlohmann::ordered_json j = {
        {"world_size", world},
        {"threads_per_rank", o.threads},
        {"cpus_allowed_per_rank", cpus},
        {"load_average_start", load_at_start},
        {"load_average_end", load_at_end},
        {"allreduce",
         {{"bytes", ar.bytes},
          {"buckets", ar.buckets},
          {"bucket_mb", o.bucket_mb},
          {"reps", o.reps},
          {"correct", ar.correct},
          {"raw_mpi_s", ar.raw_s},
          {"raw_mpi_bucket_sized_s", ar.raw_buckets_s},
          {"ddp_comm_s", ar.ddp_comm_s},
          {"ddp_sync_wall_s", ar.ddp_wall_s},
          {"communicator_buckets_s", ar.comm_buckets_s},
          {"raw_mpi_gbps", gbps(ar.bytes, ar.raw_s)},
          {"raw_mpi_bucket_sized_gbps", gbps(ar.bytes, ar.raw_buckets_s)},
          {"ddp_comm_gbps", gbps(ar.bytes, ar.ddp_comm_s)},
          {"ddp_sync_wall_gbps", gbps(ar.bytes, ar.ddp_wall_s)},
          {"communicator_buckets_gbps", gbps(ar.bytes, ar.comm_buckets_s)},
          {"ddp_comm_vs_raw", ratio(ar.raw_s, ar.ddp_comm_s)},
          {"ddp_sync_wall_vs_raw", ratio(ar.raw_s, ar.ddp_wall_s)},
          {"communicator_buckets_vs_raw", ratio(ar.raw_s, ar.comm_buckets_s)}}}};
    if (o.steps > 0) {
      j["train"] = {{"model", cfg.summary()},
                    {"batch_per_rank", o.batch},
                    {"seq_len", o.seq_len},
                    {"steps", o.steps},
                    {"warmup", o.warmup},
                    {"single_step_s", single.step_s},
                    {"independent_step_s", independent.step_s},
                    {"ddp_step_s", ddp.step_s},
                    {"single_median_s", t1},
                    {"independent_median_s", ti},
                    {"ddp_median_s", tn},
                    {"weak_scaling_efficiency", efficiency},
                    {"comm_s_by_rank", comm_by_rank},
                    {"wait_s_by_rank", wait_by_rank},
                    {"comm_per_step_median_s_by_rank", comm_step_by_rank},
                    {"hidden_fraction", hidden}};
    }
    std::ofstream out(o.out);
    out << j.dump(2) << "\n";
    if (!out) {
      std::cerr << "cannot write " << o.out << "\n";
      return 1;
    }
    std::printf("wrote %s\n", o.out.c_str());
  }
  return 0;
}
