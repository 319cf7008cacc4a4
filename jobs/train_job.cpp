// `shc train`: the training loop (SPEC §8). AdamW with decay on matrices only, linear warmup +
// cosine decay, gradient clipping, accumulation over micro-batches, fp32 or bf16 autocast, a
// NaN/Inf guard, periodic validation, a progress line and RUN_DIR/metrics.jsonl.
// Runs on every MPI rank (mpirun / srun): each rank trains on its slice of every global batch,
// with the parameters replicated (ddp, parallel/ddp.h) or sharded (fsdp / hybrid,
// parallel/fsdp.h).
#include <torch/torch.h>

#include <boost/log/trivial.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <thread>

#include <sched.h>

#include "core/precision.h"
#include "core/transformer.h"
#include "data/loader.h"
#include "jobs/job.h"
#include "jobs/logging.h"
#include "jobs/lr_schedule.h"
#include "jobs/metrics_log.h"
#include "jobs/model_options.h"
#include "jobs/trainer.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"
#include "parallel/fsdp.h"
#include "parallel/runtime.h"
#include "parallel/transformer_units.h"

namespace shc::jobs {
namespace {

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  std::ostringstream o;
  if (s >= 3600) o << s / 3600 << "h";
  if (s >= 60) o << (s % 3600) / 60 << "m";
  o << s % 60 << "s";
  return o.str();
}

// Shard files of a comma-separated list of globs.
std::vector<std::string> shard_files(const std::string& comma_separated) {
  std::vector<std::string> patterns;
  std::stringstream s(comma_separated);
  for (std::string p; std::getline(s, p, ',');) {
    if (!p.empty()) patterns.push_back(p);
  }
  return data::expand_globs(patterns);
}

// (rows, seq_len + 1) int64 tensor from a loader batch.
torch::Tensor to_tensor(std::vector<int32_t> tokens, int64_t rows) {
  auto t = torch::from_blob(tokens.data(), {rows, int64_t(tokens.size()) / rows}, torch::kInt);
  return t.to(torch::kLong);
}

// Intra-op threads for this rank when train.threads is 0: the cores this process may run on
// (mpirun binds each rank to a core by default; so does OpenMPI's singleton start), shared among
// the ranks of this node when the process is not bound. More threads than cores makes LibTorch's
// OpenMP workers spin against each other (measured: 30x slower steps).
int default_threads(const parallel::Runtime& runtime) {
  cpu_set_t mask;
  const int online = int(std::thread::hardware_concurrency());
  if (sched_getaffinity(0, sizeof(mask), &mask) != 0)
    return std::max(1, online / runtime.local_size());
  const int allowed = CPU_COUNT(&mask);
  return std::max(1, allowed < online ? allowed : online / runtime.local_size());
}

// The run directory and its parents; an ExitError (exit 3, I/O) naming it when that fails, e.g.
// because a regular file is in the way.
void create_run_directory(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!ec && std::filesystem::is_directory(dir, ec)) return;
  throw ExitError(kExitData, "cannot create the run directory '" + dir +
                                 "': " + (ec ? ec.message() : "a file of that name is in the way"));
}

class TrainJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    // clang-format off
    po::options_description run("run options");
    run.add_options()
        ("run.dir", po::value<std::string>()->default_value("runs/train"),
         "run directory (rank 0's value is used by every rank): logs/rank<R>.log, metrics.jsonl");
    po::options_description train("train options");
    train.add_options()
        ("train.max_steps", po::value<int64_t>()->default_value(200), "optimizer steps")
        ("train.seed", po::value<uint64_t>()->default_value(1234),
         "seed of the model initialisation and the data order")
        ("train.global_batch", po::value<int64_t>()->default_value(16),
         "sequences per optimizer step over all ranks (a multiple of the world size)")
        ("train.micro_batch", po::value<int64_t>()->default_value(0),
         "sequences per forward/backward on each rank (0 = the rank's whole share of the batch); "
         "gradients accumulate over global_batch / (world size * micro_batch) micro-batches")
        ("train.seq_len", po::value<int64_t>()->default_value(128), "tokens per sequence")
        ("train.lr", po::value<double>()->default_value(1e-3), "peak learning rate")
        ("train.min_lr_ratio", po::value<double>()->default_value(0.1),
         "final learning rate as a fraction of the peak (cosine decay)")
        ("train.warmup_steps", po::value<int64_t>()->default_value(20), "linear warmup steps")
        ("train.weight_decay", po::value<double>()->default_value(0.1),
         "AdamW weight decay (matrices only)")
        ("train.beta1", po::value<double>()->default_value(0.9), "AdamW beta1")
        ("train.beta2", po::value<double>()->default_value(0.95), "AdamW beta2")
        ("train.grad_clip", po::value<double>()->default_value(1.0),
         "clip the global gradient norm to this (0 = off)")
        ("train.precision", po::value<std::string>()->default_value("fp32"),
         "fp32, or bf16 (bf16 compute, fp32 weights, gradients and optimizer state)")
        ("train.max_bad_steps", po::value<int64_t>()->default_value(3),
         "abort (exit 4) after this many consecutive steps with a NaN/Inf loss or gradient")
        ("train.eval_every", po::value<int64_t>()->default_value(50),
         "validate every this many steps (and before the first and after the last)")
        ("train.eval_batches", po::value<int64_t>()->default_value(8),
         "validation batches per validation; each holds micro_batch sequences per rank")
        ("train.log_every", po::value<int64_t>()->default_value(10), "progress line every N steps")
        ("train.threads", po::value<int>()->default_value(0),
         "intra-op threads per rank (0 = LibTorch's default)");
    po::options_description parallel("parallel options");
    parallel.add_options()
        ("parallel.strategy", po::value<std::string>()->default_value("ddp"),
         "ddp (replicated parameters, averaged gradients), fsdp (parameters, gradients and "
         "optimizer state sharded 1/N over all ranks, ZeRO-3) or hybrid (sharded within groups "
         "of parallel.shard_group_size ranks, replicated across groups)")
        ("parallel.shard_group_size", po::value<int>()->default_value(0),
         "hybrid: ranks per shard group (must divide the world size)")
        ("parallel.reshard_after_forward", po::value<bool>()->default_value(true),
         "fsdp/hybrid: free each gathered unit after its forward (false = ZeRO-2: keep it "
         "gathered until its backward)")
        ("parallel.backend", po::value<std::string>()->default_value("auto"),
         "auto | mpi | nccl (auto: nccl on GPUs in a build with NCCL, else mpi)")
        ("parallel.bucket_mb", po::value<double>()->default_value(25.0),
         "DDP gradient bucket size in MiB")
        ("parallel.timeout_s", po::value<double>()->default_value(600.0),
         "a collective (or the runtime's barrier or broadcast) unfinished after this many "
         "seconds ends the job (exit 5)");
    po::options_description data("data options");
    data.add_options()
        ("data.train", po::value<std::string>(), "training shards: glob(s), comma-separated")
        ("data.val", po::value<std::string>()->default_value(""),
         "validation shards: glob(s), comma-separated (empty = no validation)");
    // clang-format on
    options.add(run).add(train).add(parallel).add(data);
    add_model_options(options);
  }

  int run(const po::variables_map& vm) override {
    auto& runtime = parallel::Runtime::instance();
    const int rank = runtime.rank(), world = runtime.world_size();
    const torch::Device device = runtime.device();
    const bool root = runtime.is_root();

    const auto cfg = model_config_from(vm);
    if (!vm.count("data.train")) throw std::invalid_argument("data.train is required");
    const std::string strategy = vm["parallel.strategy"].as<std::string>();
    if (strategy != "ddp" && strategy != "fsdp" && strategy != "hybrid") {
      throw std::invalid_argument("parallel.strategy must be ddp, fsdp or hybrid, got '" +
                                  strategy + "'");
    }
    const bool sharded = strategy != "ddp";
    const int shard_group = strategy == "fsdp"     ? world
                            : strategy == "hybrid" ? vm["parallel.shard_group_size"].as<int>()
                                                   : 1;
    if (sharded && (shard_group < 1 || world % shard_group != 0)) {
      throw std::invalid_argument("parallel.shard_group_size (" + std::to_string(shard_group) +
                                  ") must be a positive divisor of the world size (" +
                                  std::to_string(world) + ")");
    }
    const int64_t max_steps = vm["train.max_steps"].as<int64_t>();
    const int64_t global_batch = vm["train.global_batch"].as<int64_t>();
    const int64_t seq_len = vm["train.seq_len"].as<int64_t>();
    const uint64_t seed = vm["train.seed"].as<uint64_t>();
    const auto precision = parse_precision(vm["train.precision"].as<std::string>());
    const int64_t eval_every = vm["train.eval_every"].as<int64_t>();
    const int64_t eval_batches = vm["train.eval_batches"].as<int64_t>();
    const int64_t log_every = std::max<int64_t>(1, vm["train.log_every"].as<int64_t>());
    const int64_t max_bad_steps = vm["train.max_bad_steps"].as<int64_t>();
    const double grad_clip = vm["train.grad_clip"].as<double>();
    if (max_steps < 1 || global_batch < 1 || global_batch % world != 0) {
      throw std::invalid_argument("train.max_steps must be positive and train.global_batch (" +
                                  std::to_string(global_batch) +
                                  ") a positive multiple of the world size (" +
                                  std::to_string(world) + ")");
    }
    const int64_t local_batch = global_batch / world;
    int64_t micro_batch = vm["train.micro_batch"].as<int64_t>();
    if (micro_batch == 0) micro_batch = local_batch;
    if (micro_batch < 1 || local_batch % micro_batch != 0) {
      throw std::invalid_argument("each rank's share of the batch (" + std::to_string(local_batch) +
                                  ") must be a multiple of train.micro_batch (" +
                                  std::to_string(micro_batch) + ")");
    }
    if (seq_len < 1 || seq_len + 1 > cfg.max_seq_len) {
      throw std::invalid_argument("train.seq_len (" + std::to_string(seq_len) +
                                  ") + 1 must be at most model.max_seq_len (" +
                                  std::to_string(cfg.max_seq_len) + ")");
    }
    const int threads = vm["train.threads"].as<int>();
    torch::set_num_threads(threads > 0 ? threads : default_threads(runtime));

    // Rank 0 decides the run directory; every rank logs into it.
    runtime.set_collective_timeout(vm["parallel.timeout_s"].as<double>());
    std::string run_dir = vm["run.dir"].as<std::string>();
    runtime.broadcast_string(run_dir);
    if (root) create_run_directory(run_dir);
    runtime.barrier();
    add_rank_log_file(run_dir, rank);
    std::unique_ptr<MetricsLog> metrics;
    if (root) metrics = std::make_unique<MetricsLog>(run_dir + "/metrics.jsonl");

    auto comm = parallel::make_communicator(vm["parallel.backend"].as<std::string>(), device,
                                            {vm["parallel.timeout_s"].as<double>()});

    data::LoaderOptions train_opts;
    train_opts.files = shard_files(vm["data.train"].as<std::string>());
    train_opts.seq_len = seq_len;
    train_opts.seed = seed;
    train_opts.rank = rank;
    train_opts.world_size = world;
    train_opts.global_batch = global_batch;
    train_opts.expected_vocab = cfg.vocab_size;
    data::Loader train_data(train_opts);
    std::unique_ptr<data::Loader> val_data;
    if (const auto val = vm["data.val"].as<std::string>(); !val.empty()) {
      auto val_opts = train_opts;
      val_opts.files = shard_files(val);
      val_opts.global_batch = micro_batch * world;
      val_data = std::make_unique<data::Loader>(val_opts);
    }

    AdamWSettings adamw;
    adamw.lr = vm["train.lr"].as<double>();
    adamw.weight_decay = vm["train.weight_decay"].as<double>();
    adamw.beta1 = vm["train.beta1"].as<double>();
    adamw.beta2 = vm["train.beta2"].as<double>();
    std::unique_ptr<parallel::DistributedDataParallel> ddp;
    std::unique_ptr<parallel::Communicator> shard_comm, replica_comm;
    std::unique_ptr<parallel::FullyShardedDataParallel> fsdp;
    std::unique_ptr<torch::optim::Optimizer> optimizer;
    SHCTransformer model{nullptr};
    torch::manual_seed(seed);
    if (sharded) {
      shard_comm = comm->split(rank / shard_group, rank);
      // Replicas only when there are several shard groups (hybrid); fsdp shards over everyone.
      if (shard_group < world) replica_comm = comm->split(rank % shard_group, rank);
      // Built unit by unit, each unit sharded as soon as it exists: no rank ever holds the whole
      // model, and the values are those of SHCTransformer(cfg) after the same manual_seed.
      fsdp = std::make_unique<parallel::FullyShardedDataParallel>(
          parallel::TransformerUnits::builder(cfg), *shard_comm, replica_comm.get(),
          parallel::FullyShardedDataParallel::Options{
              vm["parallel.reshard_after_forward"].as<bool>()});
      model = static_cast<parallel::TransformerUnits&>(fsdp->model()).model();
      // Decoupled weight decay is applied by fsdp->apply_weight_decay (a shard mixes parameters
      // with and without decay), so the optimizer's own is 0.
      optimizer = std::make_unique<torch::optim::AdamW>(fsdp->shards(),
                                                        torch::optim::AdamWOptions(adamw.lr)
                                                            .betas({adamw.beta1, adamw.beta2})
                                                            .eps(adamw.eps)
                                                            .weight_decay(0.0));
    } else {
      model = SHCTransformer(cfg);
      model->to(device);
      if (world > 1) {
        ddp = std::make_unique<parallel::DistributedDataParallel>(
            model->parameters(), *comm, vm["parallel.bucket_mb"].as<double>());
        ddp->broadcast_parameters(0);
      }
      optimizer = make_adamw(*model, adamw);
    }
    const int64_t num_parameters = fsdp ? fsdp->total_numel() : model->num_parameters();
    BOOST_LOG_TRIVIAL(info) << cfg.summary() << ": " << num_parameters << " parameters; "
                            << train_data.sequences_per_epoch() << " training sequences of "
                            << seq_len + 1 << " tokens; " << world << " rank(s), "
                            << comm->backend() << " backend, device " << device.str() << ", "
                            << torch::get_num_threads() << " thread(s) per rank";
    if (root) {
      // fp32 parameters, gradients and AdamW's two moments: all on every rank (ddp), or a 1/g
      // share plus the units gathered while they run (fsdp/hybrid).
      const int64_t share = 16 * num_parameters / (sharded ? shard_group : 1);
      BOOST_LOG_TRIVIAL(info) << "memory per rank (" << strategy << "): parameters + gradients + "
                              << "optimizer = " << (share >> 20) << " MiB"
                              << (sharded ? " (plus padding and the gathered units)" : "")
                              << ", plus activations";
    }
    MicroBatchLoss loss_of = [&](const torch::Tensor& ids) {
      return fsdp ? fsdp->loss(ids) : model->forward(ids, ids);
    };
    LrSchedule schedule{adamw.lr, vm["train.warmup_steps"].as<int64_t>(), max_steps,
                        vm["train.min_lr_ratio"].as<double>()};

    // Mean over all ranks of a per-rank mean (equal shares): what one process would compute.
    auto mean_over_ranks = [&](double value) {
      return world == 1 ? value : comm->all_reduce_scalar(value, parallel::ReduceOp::kAvg);
    };

    auto validate = [&](int64_t step) {
      if (!val_data) return;
      torch::NoGradGuard no_grad;
      model->eval();
      val_data->restore(0);  // the same validation sequences every time
      double sum = 0;
      for (int64_t i = 0; i < eval_batches; ++i) {
        auto ids = to_tensor(val_data->next_batch(), micro_batch).to(device);
        AutocastScope autocast(precision == Precision::kBf16, device.type());
        sum += loss_of(ids).item<double>();
      }
      model->train();
      const double val_loss = mean_over_ranks(sum / double(eval_batches));
      if (metrics) metrics->write(step, {{"val_loss", val_loss}});
      BOOST_LOG_TRIVIAL(info) << "step " << step << " | val_loss " << std::fixed
                              << std::setprecision(4) << val_loss;
    };

    validate(0);
    model->train();
    const auto start = std::chrono::steady_clock::now();
    int64_t bad_steps = 0;
    const double tokens_per_step = double(global_batch * seq_len);
    for (int64_t step = 1; step <= max_steps; ++step) {
      const auto step_start = std::chrono::steady_clock::now();
      const double lr = schedule.at(step);
      set_learning_rate(*optimizer, lr);
      if (cfg.adaptive_rank) {
        // Exponential annealing of the rank selector's Gumbel temperature over the run.
        const double progress = double(step - 1) / double(std::max<int64_t>(1, max_steps - 1));
        model->set_rank_temperature(cfg.rank_tau_start *
                                    std::pow(cfg.rank_tau_min / cfg.rank_tau_start, progress));
      }
      optimizer->zero_grad();
      if (fsdp) fsdp->zero_grad();
      // Row r of this rank's batch is the global sequence first_sequence + r (data/loader.h).
      const int64_t first_sequence = train_data.position() + rank * local_batch;
      auto batch = to_tensor(train_data.next_batch(), local_batch).to(device);
      double loss = accumulate_gradients(
          loss_of, batch, micro_batch, precision,
          [&](bool last) {
            if (ddp) ddp->set_sync(last);  // no_sync until the last micro-batch
          },
          [&](int64_t first_row) {
            // Gumbel noise keyed by global sequence, not by rank or micro-batch: any world size
            // and accumulation draws what one process would.
            if (!cfg.adaptive_rank) return;
            model->set_gumbel_noise(GumbelNoiseKey{
                seed, step,
                torch::arange(first_sequence + first_row, first_sequence + first_row + micro_batch,
                              torch::kLong)});
          });
      if (ddp) ddp->finish_gradient_sync();
      if (fsdp) fsdp->finish_step();
      loss = mean_over_ranks(loss);
      // Gradients are identical on every rank after the reduction, so is their norm.
      const double grad_norm =
          fsdp ? fsdp->clip_grad_norm(grad_clip)
               : torch::nn::utils::clip_grad_norm_(
                     model->parameters(),
                     grad_clip > 0 ? grad_clip : std::numeric_limits<double>::infinity());
      if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
        ++bad_steps;
        BOOST_LOG_TRIVIAL(warning)
            << "step " << step << ": non-finite loss " << loss << " or gradient norm " << grad_norm
            << "; step skipped (" << bad_steps << " in a row)";
        if (bad_steps >= max_bad_steps) {
          throw ExitError(kExitNumerical, "training diverged: " + std::to_string(bad_steps) +
                                              " consecutive steps with a non-finite loss or "
                                              "gradient (train.max_bad_steps)");
        }
        optimizer->zero_grad();
      } else {
        bad_steps = 0;
        if (fsdp) fsdp->apply_weight_decay(lr, adamw.weight_decay);
        optimizer->step();
      }
      const double step_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
      const double tokens_per_s = tokens_per_step / step_seconds;
      if (metrics) {
        metrics->write(
            step,
            {{"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm}, {"tokens_per_s", tokens_per_s}});
      }
      if (step % log_every == 0 || step == max_steps) {
        const double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        BOOST_LOG_TRIVIAL(info) << "step " << step << "/" << max_steps << " | loss " << std::fixed
                                << std::setprecision(4) << loss << " | lr " << std::scientific
                                << std::setprecision(2) << lr << " | grad_norm " << std::fixed
                                << std::setprecision(3) << grad_norm << " | "
                                << std::setprecision(0) << tokens_per_s << " tok/s | ETA "
                                << format_duration(elapsed / double(step) *
                                                   double(max_steps - step));
      }
      if (eval_every > 0 && step % eval_every == 0 && step != max_steps) validate(step);
    }
    validate(max_steps);
    return kExitOk;
  }
};

SHC_REGISTER_JOB(TrainJob, "train",
                 "train a model on HDF5 token shards (single process or mpirun)");

}  // namespace
}  // namespace shc::jobs
