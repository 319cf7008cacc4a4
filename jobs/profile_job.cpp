// `shc profile`: where the time goes (SPEC §8, §12). Two measurements:
//   shc profile --routing-bench [--out FILE.json]  routing micro-benchmark (jobs/routing_bench.h):
//                                                  H_res construction per kind, and the model's
//                                                  whole hyper-connection step beside the
//                                                  memory-traffic limit of this machine
//   shc profile [--model.* ...] [--out FILE.json]  one model: the machine's measured GEMM peak and
//                                                  copy bandwidth; forward, forward+backward and
//                                                  cached-generation tokens/s; one training step
//                                                  split into data, forward, backward,
//                                                  communication and optimizer, and inside the
//                                                  blocks into routing, attention and FFN
//                                                  (forward and backward); MFU; peak memory per
//                                                  residual kind at the same width
// The JSON report goes to --out (or stdout); the readable tables go to the log.
#include <torch/cuda.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <boost/log/trivial.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>

#include "checkpoints/file_io.h"
#include "core/stage_marks.h"
#include "core/transformer.h"
#include "data/loader.h"
#include "jobs/counting_allocator.h"
#include "jobs/job.h"
#include "jobs/job_helpers.h"
#include "jobs/logging.h"
#include "jobs/machine_peak.h"
#include "jobs/model_options.h"
#include "jobs/routing_bench.h"
#include "jobs/train_step.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"
#include "parallel/runtime.h"

namespace shc::jobs {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option) {
  std::vector<int64_t> values;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ',')) {
    try {
      size_t used = 0;
      values.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw std::invalid_argument(option + ": '" + text +
                                  "' is not a comma-separated list of integers");
    }
  }
  return values;
}

// Creates the report's folder; the write is atomic, so a reader never sees half a report.
void write_report(const std::string& path, const std::string& text) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  checkpoints::write_file_atomically(path, text);
  BOOST_LOG_TRIVIAL(info) << "wrote " << path;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Logs a multi-line table line by line (each line one record, so the rank prefix stays aligned).
void log_table(const std::string& table) {
  std::stringstream s(table);
  std::string line;
  while (std::getline(s, line)) BOOST_LOG_TRIVIAL(info) << line;
}

// Model FLOPs per token, the standard count (Kaplan et al. 2020, "Scaling laws", sec. 2.1; PaLM,
// Chowdhery et al. 2022, appendix B):
//   training (forward + backward) = 6 N + 12 L T d,   forward alone = 2 N + 4 L T d
// N: the parameters that multiply activations = every parameter except an untied embedding
//    table (the lookup is a gather; a tied table counts once, as the LM head GEMM). Routing
//    projections are in N; the stream mixing itself (O(n^2 d) per token) is not a parameter
//    GEMM and is not counted, nor are norms' and softmax's elementwise work.
// 12 L T d: per layer and token, Q K^T and A V cost 2 T d FLOPs each forward (d = heads x
//    head_dim), x3 with backward; T = tokens per sequence, counted over the full T x T
//    (no causal halving), as PaLM does.
struct FlopsPerToken {
  int64_t matmul_parameters = 0;
  double train = 0, forward = 0;
};
FlopsPerToken flops_per_token(const SHCTransformerImpl& model, int64_t seq) {
  const auto& cfg = model.config();
  FlopsPerToken f;
  f.matmul_parameters = model.num_parameters();
  if (!cfg.tie_embeddings) f.matmul_parameters -= cfg.vocab_size * cfg.hidden_dim;
  const double attention = double(cfg.n_layers) * double(seq) * double(cfg.hidden_dim);
  f.train = 6.0 * double(f.matmul_parameters) + 12.0 * attention;
  f.forward = 2.0 * double(f.matmul_parameters) + 4.0 * attention;
  return f;
}

// Per-stage time inside the blocks, from the stage boundaries SHCBlock reports
// (core/stage_marks.h): the time between two consecutive boundaries of one pass belongs to the
// stage the first of them entered. Time outside the blocks is left to the caller (the pass's
// total minus the blocks' stages).
class StageTimer : public StageObserver {
 public:
  explicit StageTimer(bool cuda) : cuda_(cuda) {}

  void on_stage_boundary(int64_t, BlockStage from, BlockStage to, bool backward,
                         const torch::Tensor&) override {
    if (cuda_) torch::cuda::synchronize();
    const auto now = Clock::now();
    auto& p = passes_[backward ? 1 : 0];
    if (p.stage != BlockStage::kOutside) {
      p.seconds[size_t(p.stage)] += std::chrono::duration<double>(now - p.since).count();
    }
    p.stage = backward ? from : to;
    p.since = now;
  }

  double seconds(BlockStage stage, bool backward) const {
    return passes_[backward ? 1 : 0].seconds[size_t(stage)];
  }
  void reset() { passes_ = {}; }

 private:
  struct Pass {
    BlockStage stage = BlockStage::kOutside;
    Clock::time_point since;
    std::array<double, kNumBlockStages> seconds{};
  };
  bool cuda_;
  std::array<Pass, 2> passes_{};
};

// Synthetic token rows, or this rank's rows of HDF5 shards (data/loader.h).
class StepData {
 public:
  StepData(const std::string& files, const ModelConfig& cfg, int64_t batch, int64_t seq, int rank,
           int world)
      : vocab_(cfg.vocab_size), batch_(batch), seq_(seq) {
    if (files.empty()) return;
    data::LoaderOptions o;
    o.files = data::expand_glob_list(files);
    o.seq_len = seq - 1;  // rows of seq_len + 1 = seq tokens
    o.rank = rank;
    o.world_size = world;
    o.global_batch = batch * world;
    o.expected_vocab = cfg.vocab_size;
    loader_ = std::make_unique<data::Loader>(o);
  }

  torch::Tensor next() {
    if (loader_) return batch_tensor(loader_->next_batch(), loader_->local_batch());
    return torch::randint(vocab_, {batch_, seq_}, torch::kLong);
  }

 private:
  int64_t vocab_, batch_, seq_;
  std::unique_ptr<data::Loader> loader_;
};

constexpr BlockStage kStagesInBlocks[] = {BlockStage::kRouting, BlockStage::kAttention,
                                          BlockStage::kFeedForward};

struct StepBreakdown {
  double data = 0, forward = 0, backward = 0, communication_wait = 0, optimizer = 0, step = 0;
  double communication_busy = 0;  // seconds the DDP thread spent in all-reduce (overlapped)
  // Seconds of each pass per block stage; kOutside: the rest of the pass.
  std::array<double, kNumBlockStages> forward_stage{}, backward_stage{};
};

class ProfileJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    // clang-format off
    options.add_options()
        ("routing-bench", po::bool_switch(),
         "run the routing micro-benchmark instead of the model profile: the H_res construction "
         "of every kind (SHC vs mHC Sinkhorn-10/20 vs HC, with and without the coefficient "
         "projection), and the model's own hyper-connection step (route + read + write, forward "
         "and forward+backward, every kind) beside its memory-traffic limit at the measured copy "
         "bandwidth")
        ("out", po::value<std::string>(),
         "write the JSON report to this file (else to stdout); the readable tables go to the log")
        ("profile.device", po::value<std::string>()->default_value("cpu"),
         "model profile: cpu or cuda[:N]")
        ("profile.threads", po::value<int>()->default_value(0),
         "intra-op threads (0 = LibTorch's default; under mpirun the cores this rank may use)")
        ("profile.tokens", po::value<int64_t>()->default_value(4096), "routing bench: tokens T")
        ("profile.hidden", po::value<int64_t>()->default_value(1024),
         "routing bench: hidden size d")
        ("profile.streams", po::value<std::string>()->default_value("2,4,8,16"),
         "routing bench: stream counts n")
        ("profile.repeats", po::value<int64_t>()->default_value(10),
         "timed repetitions per case (routing bench: medians; model profile: timed passes and "
         "training steps, means)")
        ("profile.batch", po::value<int64_t>()->default_value(4),
         "model profile: sequences per batch (per rank)")
        ("profile.seq_len", po::value<int64_t>()->default_value(128),
         "model profile: tokens per sequence")
        ("profile.generate_tokens", po::value<int64_t>()->default_value(32),
         "model profile: tokens generated per sequence with the KV cache (0 = skip)")
        ("profile.data", po::value<std::string>()->default_value(""),
         "model profile: HDF5 token shards (comma-separated globs) the training steps read, so "
         "that the data time is the loader's; empty = synthetic random tokens")
        ("profile.memory_kinds", po::value<std::string>()->default_value("residual,hc,mhc,shc"),
         "model profile: residual kinds whose memory is measured at the model's shape "
         "(parameters, activations saved by forward, peak of forward+backward, counted by a CPU "
         "allocator; CPU only); empty = skip")
        ("profile.gemm_size", po::value<int64_t>()->default_value(1024),
         "model profile: size of the fp32 GEMM whose measured rate is the peak for MFU")
        ("profile.copy_mb", po::value<int64_t>()->default_value(256),
         "MiB copied to measure the machine's copy bandwidth");
    // clang-format on
    add_model_options(options);
  }

  int run(const po::variables_map& vm) override {
    const std::string out = vm.count("out") ? vm["out"].as<std::string>() : "";
    bool root = true;
    std::string report;
    if (vm["routing-bench"].as<bool>()) {
      if (int threads = vm["profile.threads"].as<int>(); threads > 0) {
        torch::set_num_threads(threads);
      }
      report = routing_bench(vm);
    } else {
      report = model_profile(vm, root);
    }
    if (!root) return kExitOk;
    if (out.empty()) {
      std::cout << report;
    } else {
      write_report(out, report);
    }
    return kExitOk;
  }

 private:
  static std::string routing_bench(const po::variables_map& vm) {
    RoutingBenchOptions o;
    o.tokens = vm["profile.tokens"].as<int64_t>();
    o.hidden = vm["profile.hidden"].as<int64_t>();
    o.streams = parse_int_list(vm["profile.streams"].as<std::string>(), "profile.streams");
    o.repeats = vm["profile.repeats"].as<int64_t>();
    o.copy_bytes = vm["profile.copy_mb"].as<int64_t>() << 20;
    BOOST_LOG_TRIVIAL(info) << "routing benchmark: T=" << o.tokens << " d=" << o.hidden
                            << " threads=" << torch::get_num_threads();
    auto report = run_routing_bench(o);
    for (int64_t n : o.streams) {
      for (bool proj : {false, true}) {
        BOOST_LOG_TRIVIAL(info) << "n=" << n << (proj ? " with projection" : " H_res only")
                                << ": mHC-20 / SHC = "
                                << routing_bench_ratio(report.results, "mhc", 20, n, "fwd_bwd",
                                                       proj)
                                << "x (fwd+bwd), "
                                << routing_bench_ratio(report.results, "mhc", 20, n, "fwd", proj)
                                << "x (fwd)";
      }
    }
    log_table(routing_bench_table(report));
    return routing_bench_json(o, report);
  }

  static std::string model_profile(const po::variables_map& vm, bool& root) {
    const auto cfg = model_config_from(vm);
    const int64_t batch = vm["profile.batch"].as<int64_t>();
    const int64_t seq = vm["profile.seq_len"].as<int64_t>();
    const int64_t gen = vm["profile.generate_tokens"].as<int64_t>();
    const int64_t repeats = vm["profile.repeats"].as<int64_t>();
    if (batch < 1 || seq < 2 || gen < 0 || repeats < 1 || seq + gen > cfg.max_seq_len) {
      throw std::invalid_argument(
          "profile needs batch >= 1, repeats >= 1, 2 <= seq_len and seq_len + generate_tokens <= "
          "model.max_seq_len (" +
          std::to_string(cfg.max_seq_len) + ")");
    }
    const torch::Device device(vm["profile.device"].as<std::string>());
    if (device.is_cuda() && !torch::cuda::is_available()) {
      throw ExitError(kExitUsage,
                      "profile.device is " + device.str() + " but no CUDA device is available");
    }
    const auto memory_kinds = split_list(vm["profile.memory_kinds"].as<std::string>());
    for (const auto& kind : memory_kinds) parse_residual_kind(kind);  // fail before measuring
    // MPI only under a launcher: data parallelism (and so communication) needs several ranks,
    // and a singleton MPI start may bind this process to one core.
    parallel::Runtime* runtime = nullptr;
    if (world_size_from_environment() > 1) runtime = &parallel::Runtime::instance();
    const int world = runtime ? runtime->world_size() : 1;
    const int rank = runtime ? runtime->rank() : 0;
    root = rank == 0;
    if (int threads = vm["profile.threads"].as<int>(); threads > 0) {
      torch::set_num_threads(threads);
    } else if (runtime) {
      torch::set_num_threads(default_threads(*runtime));
    }
    auto sync = [&] {
      if (device.is_cuda()) torch::cuda::synchronize();
    };

    nlohmann::ordered_json report = {{"model", cfg.summary()}};
    report["device"] = device.str();
    report["batch"] = batch;
    report["seq_len"] = seq;
    report["threads"] = torch::get_num_threads();
    report["world_size"] = world;

    // The machine: what MFU and the routing step's traffic limit are measured against.
    const auto gemm = measure_gemm_peak(vm["profile.gemm_size"].as<int64_t>(), 5, device);
    const auto copy = measure_copy_bandwidth(vm["profile.copy_mb"].as<int64_t>() << 20, 5, device);
    BOOST_LOG_TRIVIAL(info) << "machine: fp32 GEMM " << gemm.size << "^3 " << gemm.gflop_per_s
                            << " GFLOP/s (peak for MFU), copy " << copy.gb_per_s
                            << " GB/s (read + write), " << torch::get_num_threads() << " threads";
    report["machine"] = {{"gemm_size", gemm.size},
                         {"gemm_fp32_gflop_per_s", gemm.gflop_per_s},
                         {"copy_bytes", copy.bytes},
                         {"copy_bandwidth_gb_per_s", copy.gb_per_s}};

    torch::manual_seed(0);
    SHCTransformer model(cfg);
    model->to(device);
    BOOST_LOG_TRIVIAL(info) << cfg.summary() << ": " << model->num_parameters() << " parameters";
    for (const auto& [part, count] : model->parameter_breakdown()) {
      BOOST_LOG_TRIVIAL(info) << "  " << part << ": " << count;
      report["parameters"][part] = count;
    }
    report["parameters"]["total"] = model->num_parameters();
    const auto flops = flops_per_token(*model, seq);
    report["flops_per_token"] = {
        {"formula",
         "train = 6 N + 12 L T d, forward = 2 N + 4 L T d; N = parameters that multiply "
         "activations (all but an untied embedding table), L layers, T = seq_len, d = hidden"},
        {"matmul_parameters", flops.matmul_parameters},
        {"train", flops.train},
        {"forward", flops.forward}};

    // Throughput of forward, forward+backward and cached generation (no optimizer, no data).
    auto ids =
        torch::randint(cfg.vocab_size, {batch, seq}, torch::dtype(torch::kLong).device(device));
    const double tokens = double(batch * seq);
    auto time_tokens_per_s = [&](auto&& step) {
      step();  // warm-up
      sync();
      auto start = Clock::now();
      for (int64_t i = 0; i < repeats; ++i) step();
      sync();
      return tokens * double(repeats) / seconds_since(start);
    };
    model->eval();
    const double fwd = time_tokens_per_s([&] {
      torch::NoGradGuard g;
      model->forward(ids);
    });
    model->train();
    const double fwd_bwd = time_tokens_per_s([&] {
      model->zero_grad();
      auto loss = model->forward(ids, ids);
      loss.backward();
    });
    double gen_rate = 0;
    if (gen > 0) {
      GenerationOptions o;
      o.max_new_tokens = gen;
      o.do_sample = false;
      auto prompt = ids.narrow(1, 0, seq / 2);
      auto start = Clock::now();
      model->generate(prompt, o);
      sync();
      gen_rate = double(batch * gen) / seconds_since(start);
    }
    BOOST_LOG_TRIVIAL(info) << "forward " << fwd << " tokens/s, forward+backward " << fwd_bwd
                            << " tokens/s, cached generation " << gen_rate << " tokens/s (batch "
                            << batch << ", seq " << seq << ", threads " << torch::get_num_threads()
                            << ")";
    report["forward_tokens_per_s"] = fwd;
    report["forward_backward_tokens_per_s"] = fwd_bwd;
    report["generate_tokens_per_s"] = gen_rate;
    report["forward_backward_mfu"] = flops.train * fwd_bwd / (gemm.gflop_per_s * 1e9);

    // One training step, phase by phase.
    const auto b =
        training_step_breakdown(vm, model, cfg, device, batch, seq, repeats, rank, world);
    const double step_tokens_per_s = tokens / b.step;  // per rank
    const double mfu = flops.train * step_tokens_per_s / (gemm.gflop_per_s * 1e9);
    nlohmann::ordered_json step = {
        {"data_source", vm["profile.data"].as<std::string>().empty() ? "synthetic" : "hdf5"},
        {"steps", repeats},
        {"seconds",
         {{"data", b.data},
          {"forward", b.forward},
          {"backward", b.backward},
          {"communication", b.communication_wait},
          {"optimizer", b.optimizer},
          {"total", b.step}}},
        {"communication_busy_seconds", b.communication_busy},
        {"tokens_per_s", step_tokens_per_s * world},
        {"tokens_per_s_per_rank", step_tokens_per_s},
        {"mfu", mfu}};
    for (bool backward : {false, true}) {
      const auto& stages = backward ? b.backward_stage : b.forward_stage;
      nlohmann::ordered_json split;
      for (auto s : kStagesInBlocks) split[to_string(s)] = stages[size_t(s)];
      split["outside_blocks"] = stages[size_t(BlockStage::kOutside)];
      step["blocks"][backward ? "backward" : "forward"] = split;
    }
    report["training_step"] = step;
    log_table(step_table(b, step_tokens_per_s * world, mfu, gemm.gflop_per_s, world));

    // Memory last: the counting allocator stays installed for the rest of the process.
    if (!memory_kinds.empty()) {
      if (device.is_cuda()) {
        BOOST_LOG_TRIVIAL(warning) << "memory per residual kind is measured on CPU only; skipped";
      } else {
        report["memory"] = memory_per_kind(cfg, memory_kinds, batch, seq);
      }
    }
    return report.dump(2) + "\n";
  }

  // `repeats` training steps after one warm-up: the batch (data), the model's loss (forward),
  // backward (DDP launches its bucket all-reduces meanwhile when world > 1), waiting for the
  // gradient reduction (communication: what backward did not hide), clipping and AdamW
  // (optimizer). Mean seconds per step.
  static StepBreakdown training_step_breakdown(const po::variables_map& vm, SHCTransformer& model,
                                               const ModelConfig& cfg, const torch::Device& device,
                                               int64_t batch, int64_t seq, int64_t repeats,
                                               int rank, int world) {
    StepData data(vm["profile.data"].as<std::string>(), cfg, batch, seq, rank, world);
    auto optimizer = make_adamw(*model, AdamWSettings{});
    std::vector<torch::Tensor> params = model->parameters();
    std::unique_ptr<parallel::Communicator> comm;
    std::unique_ptr<parallel::DistributedDataParallel> ddp;
    if (world > 1) {
      comm = parallel::make_communicator("auto", device);
      ddp = std::make_unique<parallel::DistributedDataParallel>(params, *comm);
      ddp->broadcast_parameters(0);
    }
    StageTimer timer(device.is_cuda());
    for (auto block : model->block_list()) block->set_stage_observer(&timer);
    auto sync = [&] {
      if (device.is_cuda()) torch::cuda::synchronize();
    };
    StepBreakdown sum;
    for (int64_t i = 0; i <= repeats; ++i) {  // i = 0 warms up
      if (i == 1) {
        timer.reset();
        if (ddp) ddp->reset_timers();
      }
      StepBreakdown t;
      auto start = Clock::now(), mark = start;
      auto lap = [&](double& into) {
        sync();
        const auto now = Clock::now();
        into = std::chrono::duration<double>(now - mark).count();
        mark = now;
      };
      auto ids = data.next().to(device);
      lap(t.data);
      optimizer->zero_grad();
      auto loss = model->forward(ids, ids);
      lap(t.forward);
      loss.backward();
      lap(t.backward);
      if (ddp) ddp->finish_gradient_sync();
      lap(t.communication_wait);
      torch::nn::utils::clip_grad_norm_(params, 1.0);
      optimizer->step();
      lap(t.optimizer);
      t.step = seconds_since(start);
      if (i == 0) continue;
      sum.data += t.data;
      sum.forward += t.forward;
      sum.backward += t.backward;
      sum.communication_wait += t.communication_wait;
      sum.optimizer += t.optimizer;
      sum.step += t.step;
    }
    for (auto block : model->block_list()) block->set_stage_observer(nullptr);
    const double r = double(repeats);
    StepBreakdown mean{sum.data / r,      sum.forward / r,
                       sum.backward / r,  sum.communication_wait / r,
                       sum.optimizer / r, sum.step / r};
    if (ddp) mean.communication_busy = ddp->comm_seconds() / r;
    // Outside the blocks: the rest of each pass (embedding, stream codec, head, loss).
    for (bool backward : {false, true}) {
      auto& stages = backward ? mean.backward_stage : mean.forward_stage;
      double inside = 0;
      for (auto s : kStagesInBlocks) inside += stages[size_t(s)] = timer.seconds(s, backward) / r;
      stages[size_t(BlockStage::kOutside)] =
          std::max(0.0, (backward ? mean.backward : mean.forward) - inside);
    }
    return mean;
  }

  static std::string step_table(const StepBreakdown& b, double tokens_per_s, double mfu,
                                double peak_gflops, int world) {
    std::ostringstream s;
    char line[200];
    auto row = [&](const char* name, double seconds, double of) {
      std::snprintf(line, sizeof line, "  %-28s %10.3f ms %6.1f %%\n", name, seconds * 1e3,
                    of > 0 ? 100.0 * seconds / of : 0.0);
      s << line;
    };
    s << "training step (mean per step; % of the step)\n";
    row("data", b.data, b.step);
    row("forward", b.forward, b.step);
    row("backward", b.backward, b.step);
    row(world > 1 ? "communication (exposed)" : "communication (1 rank: none)",
        b.communication_wait, b.step);
    row("optimizer (clip + AdamW)", b.optimizer, b.step);
    row("total", b.step, b.step);
    if (world > 1) row("all-reduce busy (overlapped)", b.communication_busy, b.step);
    for (bool backward : {false, true}) {
      const auto& stages = backward ? b.backward_stage : b.forward_stage;
      const double total = backward ? b.backward : b.forward;
      s << (backward ? "backward" : "forward") << " by block stage (% of the pass)\n";
      for (auto st : kStagesInBlocks) row(to_string(st), stages[size_t(st)], total);
      row("outside blocks", stages[size_t(BlockStage::kOutside)], total);
    }
    std::snprintf(line, sizeof line, "  %.0f tokens/s, MFU %.1f %% of %.1f GFLOP/s per rank\n",
                  tokens_per_s, 100.0 * mfu, peak_gflops);
    s << line;
    return s.str();
  }

  // For each kind, the same model shape with that residual kind: parameter bytes, the bytes
  // forward leaves alive for backward (activations; the loss's graph), and the peak above the
  // state before the step during forward+backward (activations, gradients, temporaries), counted
  // by a CPU allocator that sees every tensor allocation.
  static nlohmann::ordered_json memory_per_kind(const ModelConfig& base,
                                                const std::vector<std::string>& kinds,
                                                int64_t batch, int64_t seq) {
    auto& allocator = CountingCpuAllocator::install();
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    const double tokens = double(batch * seq);
    std::ostringstream table;
    char line[200];
    std::snprintf(line, sizeof line, "%-10s %12s %16s %16s %16s\n", "kind", "params MB",
                  "saved acts MB", "acts KB/token", "step peak MB");
    table << "memory per residual kind at d = " << base.hidden_dim << ", batch " << batch << " x "
          << seq << "\n"
          << line;
    for (const auto& name : kinds) {
      ModelConfig cfg = base;
      cfg.residual = parse_residual_kind(name);
      if (cfg.residual == ResidualKind::kResidual) {
        cfg.adaptive_rank = false;
        cfg.stream_rank = 0;
      } else if (cfg.residual != ResidualKind::kSHC) {
        cfg.adaptive_rank = false;
      }
      cfg.validate();
      torch::manual_seed(0);
      const int64_t before_model = allocator.live_bytes();
      SHCTransformer model(cfg);
      const int64_t param_bytes = allocator.live_bytes() - before_model;
      auto ids = torch::randint(cfg.vocab_size, {batch, seq}, torch::kLong);
      const int64_t before = allocator.live_bytes();
      allocator.reset_peak();
      auto loss = model->forward(ids, ids);
      const int64_t saved = allocator.live_bytes() - before;
      loss.backward();
      const int64_t peak = allocator.peak_bytes() - before;
      loss = torch::Tensor();
      out.push_back({{"kind", name},
                     {"n_streams", cfg.streams()},
                     {"stream_rank", cfg.compressed_streams() ? cfg.stream_rank : 0},
                     {"parameter_bytes", param_bytes},
                     {"saved_activation_bytes", saved},
                     {"saved_activation_bytes_per_token", double(saved) / tokens},
                     {"step_peak_bytes", peak}});
      std::snprintf(line, sizeof line, "%-10s %12.2f %16.2f %16.2f %16.2f\n", name.c_str(),
                    double(param_bytes) / 1e6, double(saved) / 1e6, double(saved) / tokens / 1e3,
                    double(peak) / 1e6);
      table << line;
    }
    log_table(table.str());
    return out;
  }
};

SHC_REGISTER_JOB(ProfileJob, "profile",
                 "where the time goes: a training step by phase and by block stage, tokens/s, "
                 "MFU, memory per residual kind; or the routing micro-benchmark (--routing-bench)");

}  // namespace
}  // namespace shc::jobs
