#include "jobs/trainer.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <boost/log/trivial.hpp>

#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>

#include "checkpoints/errors.h"
#include "checkpoints/layout.h"
#include "checkpoints/rank_state.h"
#include "checkpoints/restore.h"
#include "checkpoints/writer.h"
#include "core/precision.h"
#include "data/loader.h"
#include "jobs/job.h"
#include "jobs/job_helpers.h"
#include "jobs/logging.h"
#include "jobs/lr_schedule.h"
#include "jobs/metrics_log.h"
#include "jobs/preemption.h"
#include "jobs/run_directory.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"
#include "parallel/fsdp.h"
#include "parallel/runtime.h"

#ifndef SHC_GIT_REVISION
#define SHC_GIT_REVISION "unknown"
#endif

namespace shc::jobs {

namespace po = boost::program_options;
using nlohmann::json;

void add_trainer_options(po::options_description& options) {
  // clang-format off
  po::options_description run("run options", kHelpLineLength, kHelpLineLength / 2);
  run.add_options()
      ("run.dir", po::value<std::string>()->default_value("runs/train"),
       "run directory (rank 0's value is used by every rank; on a filesystem all ranks share): "
       "logs/rank<R>.log, metrics.jsonl, checkpoints/step_<N>/, latest");
  po::options_description train("train options", kHelpLineLength, kHelpLineLength / 2);
  train.add_options()
      ("train.max_steps", po::value<int64_t>()->default_value(200),
       "optimizer steps of the whole run (the schedule's length); rerunning with a larger value "
       "extends a finished run from its latest checkpoint")
      ("train.stop_after_steps", po::value<int64_t>()->default_value(0),
       "train at most this many steps in this invocation, then checkpoint and exit 0; rerunning "
       "continues (0 = no limit)")
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
       "intra-op threads per rank (0 = the cores this rank may use)");
  po::options_description parallel("parallel options", kHelpLineLength, kHelpLineLength / 2);
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
  po::options_description data("data options", kHelpLineLength, kHelpLineLength / 2);
  data.add_options()
      ("data.train", po::value<std::string>(), "training shards: glob(s), comma-separated")
      ("data.val", po::value<std::string>()->default_value(""),
       "validation shards: glob(s), comma-separated (empty = no validation)");
  po::options_description checkpoint("checkpoint options", kHelpLineLength, kHelpLineLength / 2);
  checkpoint.add_options()
      ("checkpoint.every", po::value<int64_t>()->default_value(0),
       "save every this many steps (0 = only at the last step, on a signal or a time trigger)")
      ("checkpoint.every_minutes", po::value<double>()->default_value(0),
       "also save when this many minutes passed since the last save (0 = off)")
      ("checkpoint.keep_last", po::value<int>()->default_value(2),
       "keep the newest N checkpoints (at least 2)")
      ("checkpoint.keep_every", po::value<int64_t>()->default_value(0),
       "also keep every checkpoint whose step is a multiple of this, permanently (0 = off)")
      ("checkpoint.async", po::value<bool>()->default_value(false),
       "copy and write checkpoints on a background thread; training waits only before its next "
       "optimizer step for a copy not yet done (a failed write ends the job with exit 3 at the "
       "next step)")
      ("checkpoint.resume", po::value<std::string>()->default_value(""),
       "checkpoint directory to resume from, or none to start fresh (default: RUN_DIR/latest "
       "when it exists)")
      ("checkpoint.strict", po::value<bool>()->default_value(false),
       "a corrupt checkpoint is an error (exit 3) instead of falling back to the previous one");
  // clang-format on
  options.add(run).add(train).add(parallel).add(data).add(checkpoint);
}

TrainerOptions trainer_options_from(const po::variables_map& vm) {
  TrainerOptions o;
  o.run_dir = vm["run.dir"].as<std::string>();
  o.max_steps = vm["train.max_steps"].as<int64_t>();
  o.stop_after_steps = vm["train.stop_after_steps"].as<int64_t>();
  o.seed = vm["train.seed"].as<uint64_t>();
  o.global_batch = vm["train.global_batch"].as<int64_t>();
  o.micro_batch = vm["train.micro_batch"].as<int64_t>();
  o.seq_len = vm["train.seq_len"].as<int64_t>();
  o.adamw.lr = vm["train.lr"].as<double>();
  o.adamw.weight_decay = vm["train.weight_decay"].as<double>();
  o.adamw.beta1 = vm["train.beta1"].as<double>();
  o.adamw.beta2 = vm["train.beta2"].as<double>();
  o.min_lr_ratio = vm["train.min_lr_ratio"].as<double>();
  o.warmup_steps = vm["train.warmup_steps"].as<int64_t>();
  o.grad_clip = vm["train.grad_clip"].as<double>();
  o.precision = parse_precision(vm["train.precision"].as<std::string>());
  o.max_bad_steps = vm["train.max_bad_steps"].as<int64_t>();
  o.eval_every = vm["train.eval_every"].as<int64_t>();
  o.eval_batches = vm["train.eval_batches"].as<int64_t>();
  o.log_every = std::max<int64_t>(1, vm["train.log_every"].as<int64_t>());
  o.threads = vm["train.threads"].as<int>();
  o.strategy = vm["parallel.strategy"].as<std::string>();
  o.shard_group_size = vm["parallel.shard_group_size"].as<int>();
  o.reshard_after_forward = vm["parallel.reshard_after_forward"].as<bool>();
  o.backend = vm["parallel.backend"].as<std::string>();
  o.bucket_mb = vm["parallel.bucket_mb"].as<double>();
  o.timeout_s = vm["parallel.timeout_s"].as<double>();
  if (!vm.count("data.train")) throw std::invalid_argument("data.train is required");
  o.train_files = vm["data.train"].as<std::string>();
  o.val_files = vm["data.val"].as<std::string>();
  o.checkpoint_every = vm["checkpoint.every"].as<int64_t>();
  o.checkpoint_every_minutes = vm["checkpoint.every_minutes"].as<double>();
  o.keep_last = vm["checkpoint.keep_last"].as<int>();
  o.keep_every = vm["checkpoint.keep_every"].as<int64_t>();
  o.checkpoint_async = vm["checkpoint.async"].as<bool>();
  o.resume = vm["checkpoint.resume"].as<std::string>();
  o.strict = vm["checkpoint.strict"].as<bool>();
  if (o.strategy != "ddp" && o.strategy != "fsdp" && o.strategy != "hybrid") {
    throw std::invalid_argument("parallel.strategy must be ddp, fsdp or hybrid, got '" +
                                o.strategy + "'");
  }
  if (o.max_steps < 1) throw std::invalid_argument("train.max_steps must be positive");
  if (o.stop_after_steps < 0) throw std::invalid_argument("train.stop_after_steps must be >= 0");
  if (o.keep_last < 2) {
    throw std::invalid_argument("checkpoint.keep_last must be at least 2 (got " +
                                std::to_string(o.keep_last) +
                                "): the previous checkpoint is the fallback while one is written");
  }
  if (o.checkpoint_every < 0 || o.keep_every < 0 || o.checkpoint_every_minutes < 0) {
    throw std::invalid_argument(
        "checkpoint.every, checkpoint.every_minutes and checkpoint.keep_every must be >= 0");
  }
  return o;
}

json options_to_json(const po::variables_map& vm) {
  json out = json::object();
  for (const auto& [name, value] : vm) {
    const auto& v = value.value();
    if (const auto* s = boost::any_cast<std::string>(&v)) {
      out[name] = *s;
    } else if (const auto* i = boost::any_cast<int64_t>(&v)) {
      out[name] = *i;
    } else if (const auto* u = boost::any_cast<uint64_t>(&v)) {
      out[name] = *u;
    } else if (const auto* n = boost::any_cast<int>(&v)) {
      out[name] = *n;
    } else if (const auto* d = boost::any_cast<double>(&v)) {
      out[name] = *d;
    } else if (const auto* b = boost::any_cast<bool>(&v)) {
      out[name] = *b;
    } else if (const auto* list = boost::any_cast<std::vector<std::string>>(&v)) {
      out[name] = *list;
    }
  }
  return out;
}

namespace {

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  std::ostringstream o;
  if (s >= 3600) o << s / 3600 << "h";
  if (s >= 60) o << (s % 3600) / 60 << "m";
  o << s % 60 << "s";
  return o.str();
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), out;
  for (char c : all) out += c == '\0' ? ' ' : c;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return text;
}

// "model.hidden_dim: 128 in the checkpoint, 256 now; ..." for every field that differs.
std::string config_differences(const json& saved, const json& now) {
  std::string out;
  for (const auto& [key, value] : now.items()) {
    const std::string before = saved.contains(key) ? saved[key].dump() : "(absent)";
    if (before != value.dump()) {
      out += (out.empty() ? "" : "; ") + key + ": " + before + " in the checkpoint, " +
             value.dump() + " now";
    }
  }
  for (const auto& [key, value] : saved.items()) {
    if (!now.contains(key)) out += (out.empty() ? "" : "; ") + key + ": absent now";
  }
  return out;
}

class Trainer {
 public:
  Trainer(const TrainerOptions& options, const TrainingTask& task);
  int run();

 private:
  void build_model();
  checkpoints::RankState rank_state();
  // The step training continues after: a loaded checkpoint's, or 0.
  int64_t resume();
  void validate(int64_t step);
  void train_step(int64_t step);
  void save(int64_t step);
  // Collective: finishes a pending async save (waiting for its write) and logs it.
  void commit_pending_save();
  void report_commit();
  double mean_over_ranks(double value) {
    return world_ == 1 ? value : comm_->all_reduce_scalar(value, parallel::ReduceOp::kAvg);
  }
  torch::Tensor forward(const torch::Tensor& ids);

  const TrainerOptions& o_;
  const TrainingTask& task_;
  parallel::Runtime& runtime_;
  const int rank_, world_;
  const torch::Device device_;
  const bool sharded_;
  int shard_group_ = 1;
  int64_t local_batch_ = 0, micro_batch_ = 0;
  std::string run_dir_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<parallel::Communicator> comm_, shard_comm_, replica_comm_;
  std::unique_ptr<data::Loader> train_data_, val_data_;
  std::shared_ptr<parallel::ShardedModel> model_;  // replicated (ddp)
  parallel::NamedParameters parameters_;           // replicated (ddp)
  std::vector<torch::Tensor> parameter_tensors_;   // the same, without names (DDP, clipping)
  std::unique_ptr<parallel::DistributedDataParallel> ddp_;
  std::unique_ptr<parallel::FullyShardedDataParallel> fsdp_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::unique_ptr<checkpoints::CheckpointWriter> writer_;
  LrSchedule schedule_;
  int64_t bad_steps_ = 0;
  // A SentencePiece model beside the training shards (`shc prepare` writes DIR/tokenizer.model),
  // recorded so that generation and evaluation decode with it; "" for the byte tokenizer.
  std::string tokenizer_model_;
  std::chrono::steady_clock::time_point last_save_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point run_start_;  // of this invocation's training
  int64_t start_step_ = 0;
};

Trainer::Trainer(const TrainerOptions& options, const TrainingTask& task)
    : o_(options),
      task_(task),
      runtime_(parallel::Runtime::instance()),
      rank_(runtime_.rank()),
      world_(runtime_.world_size()),
      device_(runtime_.device()),
      sharded_(options.strategy != "ddp") {
  // First: a signal from here on is a request to checkpoint, never the default action (death).
  install_preemption_handlers();
  shard_group_ = o_.strategy == "fsdp" ? world_ : o_.strategy == "hybrid" ? o_.shard_group_size : 1;
  if (sharded_ && (shard_group_ < 1 || world_ % shard_group_ != 0)) {
    throw std::invalid_argument("parallel.shard_group_size (" + std::to_string(shard_group_) +
                                ") must be a positive divisor of the world size (" +
                                std::to_string(world_) + ")");
  }
  if (o_.global_batch < 1 || o_.global_batch % world_ != 0) {
    throw std::invalid_argument("train.global_batch (" + std::to_string(o_.global_batch) +
                                ") must be a positive multiple of the world size (" +
                                std::to_string(world_) + ")");
  }
  local_batch_ = o_.global_batch / world_;
  micro_batch_ = o_.micro_batch == 0 ? local_batch_ : o_.micro_batch;
  if (micro_batch_ < 1 || local_batch_ % micro_batch_ != 0) {
    throw std::invalid_argument("each rank's share of the batch (" + std::to_string(local_batch_) +
                                ") must be a multiple of train.micro_batch (" +
                                std::to_string(micro_batch_) + ")");
  }
  if (o_.seq_len < 1 || o_.seq_len + 1 > task_.max_seq_len) {
    throw std::invalid_argument("train.seq_len (" + std::to_string(o_.seq_len) +
                                ") + 1 must be at most model.max_seq_len (" +
                                std::to_string(task_.max_seq_len) + ")");
  }
  torch::set_num_threads(o_.threads > 0 ? o_.threads : default_threads(runtime_));

  runtime_.set_collective_timeout(o_.timeout_s);
  run_dir_ = open_run_directory(o_.run_dir);
  add_rank_log_file(run_dir_, rank_);
  comm_ = parallel::make_communicator(o_.backend, device_, {o_.timeout_s});

  data::LoaderOptions train_opts;
  train_opts.files = data::expand_glob_list(o_.train_files);
  train_opts.seq_len = o_.seq_len;
  train_opts.seed = o_.seed;
  train_opts.rank = rank_;
  train_opts.world_size = world_;
  train_opts.global_batch = o_.global_batch;
  train_opts.expected_vocab = task_.vocab_size;
  train_data_ = std::make_unique<data::Loader>(train_opts);
  if (!task_.expected_tokenizer.empty() && train_data_->tokenizer() != task_.expected_tokenizer) {
    throw ExitError(kExitData, "data.train is tokenized by " + train_data_->tokenizer() +
                                   ", the model expects " + task_.expected_tokenizer);
  }
  if (train_data_->tokenizer().rfind("spm:", 0) == 0) {
    const auto model =
        std::filesystem::absolute(train_opts.files.front()).parent_path() / "tokenizer.model";
    if (std::filesystem::exists(model)) tokenizer_model_ = model.string();
  }
  if (!o_.val_files.empty()) {
    auto val_opts = train_opts;
    val_opts.files = data::expand_glob_list(o_.val_files);
    val_opts.global_batch = micro_batch_ * world_;
    val_data_ = std::make_unique<data::Loader>(val_opts);
  }
  build_model();
  schedule_ = LrSchedule{o_.adamw.lr, o_.warmup_steps, o_.max_steps, o_.min_lr_ratio};
  writer_ = std::make_unique<checkpoints::CheckpointWriter>(
      run_dir_, rank_, world_,
      checkpoints::SaveOptions{o_.checkpoint_async, o_.keep_last, o_.keep_every});
}

void Trainer::build_model() {
  torch::manual_seed(o_.seed);
  if (sharded_) {
    shard_comm_ = comm_->split(rank_ / shard_group_, rank_);
    // Replicas only when there are several shard groups (hybrid); fsdp shards over everyone.
    if (shard_group_ < world_) replica_comm_ = comm_->split(rank_ % shard_group_, rank_);
    // Built unit by unit, each unit sharded as soon as it exists: no rank ever holds the whole
    // model.
    fsdp_ = std::make_unique<parallel::FullyShardedDataParallel>(
        task_.build, *shard_comm_, replica_comm_.get(),
        parallel::FullyShardedDataParallel::Options{o_.reshard_after_forward});
    // Decoupled weight decay is applied by fsdp->apply_weight_decay (a shard mixes parameters
    // with and without decay), so the optimizer's own is 0.
    optimizer_ = std::make_unique<torch::optim::AdamW>(fsdp_->shards(),
                                                       torch::optim::AdamWOptions(o_.adamw.lr)
                                                           .betas({o_.adamw.beta1, o_.adamw.beta2})
                                                           .eps(o_.adamw.eps)
                                                           .weight_decay(0.0));
  } else {
    model_ = task_.build([](int64_t, const parallel::NamedParameters&) {});
    model_->to(device_);
    for (int64_t u = 0; u < model_->num_units(); ++u) {
      for (auto& named : model_->unit_parameters(u)) parameters_.push_back(std::move(named));
    }
    for (const auto& [name, p] : parameters_) parameter_tensors_.push_back(p);
    if (world_ > 1) {
      ddp_ = std::make_unique<parallel::DistributedDataParallel>(parameter_tensors_, *comm_,
                                                                 o_.bucket_mb);
      ddp_->broadcast_parameters(0);
    }
    optimizer_ = make_adamw(parameters_, o_.adamw);
  }
  int64_t num_parameters = 0;
  if (fsdp_) {
    num_parameters = fsdp_->total_numel();
  } else {
    for (const auto& p : parameter_tensors_) num_parameters += p.numel();
  }
  BOOST_LOG_TRIVIAL(info) << task_.model_summary << ": " << num_parameters << " parameters; "
                          << train_data_->sequences_per_epoch() << " training sequences of "
                          << o_.seq_len + 1 << " tokens; " << world_ << " rank(s), "
                          << comm_->backend() << " backend, device " << device_.str() << ", "
                          << torch::get_num_threads() << " thread(s) per rank";
  // fp32 parameters, gradients and AdamW's two moments: all on every rank (ddp), or a 1/g share
  // plus the units gathered while they run (fsdp/hybrid).
  const int64_t share = 16 * num_parameters / (sharded_ ? shard_group_ : 1);
  BOOST_LOG_TRIVIAL(info) << "memory per rank (" << o_.strategy << "): parameters + gradients + "
                          << "optimizer = " << (share >> 20) << " MiB"
                          << (sharded_ ? " (plus padding and the gathered units)" : "")
                          << ", plus activations";
}

parallel::ShardedModel& model_of(parallel::FullyShardedDataParallel* fsdp,
                                 const std::shared_ptr<parallel::ShardedModel>& model) {
  return fsdp ? fsdp->model() : *model;
}

torch::Tensor Trainer::forward(const torch::Tensor& ids) {
  if (fsdp_) return fsdp_->forward(ids);
  torch::Tensor x = ids;
  for (int64_t u = 0; u < model_->num_units(); ++u) x = model_->run_unit(u, x);
  return x;
}

checkpoints::RankState Trainer::rank_state() {
  auto state = fsdp_ ? checkpoints::sharded_state(*fsdp_, *optimizer_)
                     : checkpoints::replicated_state(parameters_, *optimizer_, rank_, world_);
  state.rank_tensors = checkpoints::rng_states(device_);
  return state;
}

int64_t Trainer::resume() {
  std::vector<std::string> candidates;
  if (o_.resume == "none") {
    BOOST_LOG_TRIVIAL(info) << "checkpoint.resume none: starting fresh";
  } else if (!o_.resume.empty()) {
    candidates = {o_.resume};
  } else if (runtime_.is_root()) {
    candidates = checkpoints::resume_candidates(run_dir_);
  }
  // A run with checkpoints resumes from one of them or not at all: a failed attempt may already
  // have overwritten parameters, and a run's checkpoints are never silently discarded.
  const bool must_load = runtime_.all_reduce_max({candidates.empty() ? 0 : 1})[0] != 0;

  auto state = rank_state();
  // Runs on each candidate's manifest before any tensor is read: another model is an error (exit
  // 3); a manifest lacking a field the trainer reads is corrupt (fall back).
  auto check = [&](const checkpoints::Manifest& m) {
    const json& run = m.run;
    const json& saved = run.at("model");
    if (saved.at("family") != task_.model_family) {
      throw ExitError(kExitData, "checkpoint step " + std::to_string(m.step) + " holds a " +
                                     saved.at("family").get<std::string>() + " model, not a " +
                                     task_.model_family);
    }
    const std::string differences = config_differences(saved.at("config"), task_.model_config);
    if (!differences.empty()) {
      throw ExitError(kExitData, "checkpoint step " + std::to_string(m.step) +
                                     " was written for another model config: " + differences);
    }
    const std::string tokenizer = run.at("data").at("tokenizer").get<std::string>();
    if (tokenizer != train_data_->tokenizer()) {
      throw ExitError(kExitData, "checkpoint step " + std::to_string(m.step) +
                                     " was trained on data tokenized by " + tokenizer +
                                     ", data.train is tokenized by " + train_data_->tokenizer());
    }
    run.at("optimizer").at("step").get<int64_t>();
    run.at("data").at("consumed_sequences").get<int64_t>();
    run.at("trainer").at("bad_steps").get<int64_t>();
    run.at("schedule").at("max_steps").get<int64_t>();
    run.at("strategy").at("name").get<std::string>();
  };
  auto resumed = checkpoints::resume(
      candidates, o_.strict, check, state, rank_,
      [](const std::string& problem) { BOOST_LOG_TRIVIAL(error) << problem << "; falling back"; });
  const std::string metrics_path = run_dir_ + "/metrics.jsonl";
  if (!resumed) {
    if (must_load) {
      throw ExitError(kExitData, o_.resume.empty()
                                     ? "no checkpoint in '" +
                                           checkpoints::checkpoints_dir(run_dir_) +
                                           "' could be loaded (see above); move them away or pass "
                                           "--checkpoint.resume none to start this run over"
                                     : "cannot resume from '" + o_.resume + "' (see above)");
    }
    if (runtime_.is_root()) {
      // Starting over (checkpoint.resume none, or nothing to resume): an earlier run's files are
      // kept, renamed, so that neither its metrics nor its checkpoints mix with this run's.
      for (const auto& path : {metrics_path, checkpoints::checkpoints_dir(run_dir_),
                               checkpoints::latest_file(run_dir_)}) {
        if (const auto aside = move_aside(path); !aside.empty()) {
          BOOST_LOG_TRIVIAL(info) << "starting fresh: the earlier " << path << " was moved to "
                                  << aside;
        }
      }
      metrics_ = std::make_unique<MetricsLog>(metrics_path);
    }
    return 0;
  }
  const auto& m = resumed->manifest;
  const json& run = m.run;
  checkpoints::set_optimizer_step(*optimizer_, run.at("optimizer").at("step").get<int64_t>());
  // RNG states are per rank: restored where this rank existed in the saved run.
  if (!state.rank_tensors.empty()) checkpoints::restore_rng_states(state.rank_tensors, device_);
  train_data_->restore(run.at("data").at("consumed_sequences").get<int64_t>());
  bad_steps_ = run.at("trainer").at("bad_steps").get<int64_t>();
  BOOST_LOG_TRIVIAL(info) << "resuming from " << resumed->dir << " at step " << m.step << " ("
                          << run.at("strategy").at("name").get<std::string>() << " on "
                          << m.world_size << " rank(s); now " << o_.strategy << " on " << world_
                          << ")";
  const int64_t saved_max = run.at("schedule").at("max_steps").get<int64_t>();
  if (saved_max != o_.max_steps) {
    BOOST_LOG_TRIVIAL(info) << "train.max_steps " << o_.max_steps << " (the checkpoint's run had "
                            << saved_max << "): the schedule now ends at step " << o_.max_steps;
  }
  const json& data = run.at("data");
  const json now = {
      {"train", o_.train_files}, {"global_batch", o_.global_batch}, {"seq_len", o_.seq_len}};
  for (const auto& [key, value] : now.items()) {
    if (data.contains(key) && data[key] != value) {
      BOOST_LOG_TRIVIAL(warning) << "data." << key << " is " << value.dump()
                                 << ", the checkpoint's run had " << data[key].dump()
                                 << ": training continues at sequence " << train_data_->position()
                                 << " of this data's order";
    }
  }
  if (runtime_.is_root()) {
    // What follows the loaded step in this run is abandoned (a fallback, or an explicit older
    // checkpoint): renamed out of the step_* namespace so that neither resume nor retention takes
    // it for this run's, and `latest` names what was loaded.
    namespace fs = std::filesystem;
    const std::string own = checkpoints::checkpoints_dir(run_dir_);
    std::error_code ec;
    if (fs::equivalent(fs::path(resumed->dir).parent_path(), own, ec)) {
      for (const auto& dir : checkpoints::step_dirs(run_dir_)) {
        if (*checkpoints::step_of(dir) <= m.step) continue;
        const std::string abandoned = own + "/abandoned-" + fs::path(dir).filename().string();
        move_aside(abandoned);  // an earlier abandoned checkpoint of the same step
        fs::rename(dir, abandoned);
        BOOST_LOG_TRIVIAL(warning)
            << dir << " follows the loaded step " << m.step << ": renamed to " << abandoned;
      }
      if (checkpoints::read_latest(run_dir_) != resumed->dir) {
        checkpoints::write_latest(run_dir_, resumed->dir);
      }
    }
    if (const int64_t dropped = truncate_metrics_after(metrics_path, m.step); dropped > 0) {
      BOOST_LOG_TRIVIAL(info) << "dropped " << dropped << " record(s) after step " << m.step
                              << " from " << metrics_path;
    }
    metrics_ = std::make_unique<MetricsLog>(metrics_path);
  }
  return m.step;
}

void Trainer::validate(int64_t step) {
  if (!val_data_) return;
  torch::NoGradGuard no_grad;
  auto& model = model_of(fsdp_.get(), model_);
  model.set_training(false);
  val_data_->restore(0);  // the same validation sequences every time
  double loss_sum = 0;
  std::vector<std::pair<std::string, double>> metric_sums;
  const Forward forward = [this](const torch::Tensor& ids) { return this->forward(ids); };
  for (int64_t i = 0; i < o_.eval_batches; ++i) {
    auto ids = batch_tensor(val_data_->next_batch(), micro_batch_).to(device_);
    AutocastScope autocast(o_.precision == Precision::kBf16, device_.type());
    const auto result = task_.loss(forward, ids);
    loss_sum += result.loss.item<double>();
    metric_sums.resize(result.metrics.size());
    for (size_t k = 0; k < result.metrics.size(); ++k) {
      metric_sums[k] = {"val_" + result.metrics[k].first,
                        metric_sums[k].second + result.metrics[k].second.item<double>()};
    }
  }
  model.set_training(true);
  Metrics record = {{"val_loss", mean_over_ranks(loss_sum / double(o_.eval_batches))}};
  for (const auto& [name, sum] : metric_sums) {
    record.emplace_back(name, mean_over_ranks(sum / double(o_.eval_batches)));
  }
  if (metrics_) metrics_->write(step, record);
  BOOST_LOG_TRIVIAL(info) << "step " << step << " | val_loss " << std::fixed << std::setprecision(4)
                          << record[0].second;
}

void Trainer::train_step(int64_t step) {
  const auto start = std::chrono::steady_clock::now();
  const double lr = schedule_.at(step);
  set_learning_rate(*optimizer_, lr);
  optimizer_->zero_grad();
  if (fsdp_) fsdp_->zero_grad();
  auto& model = model_of(fsdp_.get(), model_);
  // Row r of this rank's batch is the global sequence first_sequence + r (data/loader.h).
  const int64_t first_sequence = train_data_->position() + rank_ * local_batch_;
  auto batch = batch_tensor(train_data_->next_batch(), local_batch_).to(device_);
  const Forward forward = [this](const torch::Tensor& ids) { return this->forward(ids); };
  std::vector<std::pair<std::string, torch::Tensor>> metric_sums;
  const double loss = mean_over_ranks(accumulate_gradients(
      [&](const torch::Tensor& ids) {
        auto result = task_.loss(forward, ids);
        if (metric_sums.empty()) {
          metric_sums = result.metrics;
        } else {
          for (size_t k = 0; k < metric_sums.size(); ++k) {
            metric_sums[k].second = metric_sums[k].second + result.metrics[k].second;
          }
        }
        return result.loss;
      },
      batch, micro_batch_, o_.precision,
      [&](bool last) {
        if (ddp_) ddp_->set_sync(last);  // no_sync until the last micro-batch
      },
      [&](int64_t first_row) {
        if (task_.before_micro_batch) {
          task_.before_micro_batch(model,
                                   {step, o_.max_steps, first_sequence + first_row, micro_batch_});
        }
      }));
  if (ddp_) ddp_->finish_gradient_sync();
  if (fsdp_) fsdp_->finish_step();
  // Gradients are identical on every rank after the reduction, so is their norm.
  double grad_norm;
  if (fsdp_) {
    grad_norm = fsdp_->clip_grad_norm(o_.grad_clip);
  } else {
    grad_norm = torch::nn::utils::clip_grad_norm_(
        parameter_tensors_,
        o_.grad_clip > 0 ? o_.grad_clip : std::numeric_limits<double>::infinity());
  }
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    ++bad_steps_;
    BOOST_LOG_TRIVIAL(warning) << "step " << step << ": non-finite loss " << loss
                               << " or gradient norm " << grad_norm << "; step skipped ("
                               << bad_steps_ << " in a row)";
    if (bad_steps_ >= o_.max_bad_steps) {
      throw ExitError(kExitNumerical, "training diverged: " + std::to_string(bad_steps_) +
                                          " consecutive steps with a non-finite loss or "
                                          "gradient (train.max_bad_steps)");
    }
    optimizer_->zero_grad();
  } else {
    bad_steps_ = 0;
    writer_->wait_for_snapshot();  // an async save still copying what this step changes
    if (fsdp_) fsdp_->apply_weight_decay(lr, o_.adamw.weight_decay);
    optimizer_->step();
  }
  const double step_seconds = seconds_since(start);
  const double tokens_per_s = double(o_.global_batch * o_.seq_len) / step_seconds;
  Metrics record = {
      {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm}, {"tokens_per_s", tokens_per_s}};
  const int64_t accumulation = local_batch_ / micro_batch_;
  for (const auto& [name, sum] : metric_sums) {
    record.emplace_back(name, mean_over_ranks(sum.item<double>() / double(accumulation)));
  }
  if (metrics_) metrics_->write(step, record);
  if (step % o_.log_every == 0 || step == o_.max_steps) {
    BOOST_LOG_TRIVIAL(info) << "step " << step << "/" << o_.max_steps << " | loss " << std::fixed
                            << std::setprecision(4) << loss << " | lr " << std::scientific
                            << std::setprecision(2) << lr << " | grad_norm " << std::fixed
                            << std::setprecision(3) << grad_norm << " | " << std::setprecision(0)
                            << tokens_per_s << " tok/s | ETA "
                            << format_duration(seconds_since(run_start_) /
                                               double(step - start_step_) *
                                               double(o_.max_steps - step));
  }
}

void Trainer::save(int64_t step) {
  const json run = {
      {"model", {{"family", task_.model_family}, {"config", task_.model_config}}},
      {"strategy",
       {{"name", o_.strategy}, {"world_size", world_}, {"shard_group_size", shard_group_}}},
      {"data",
       {{"consumed_sequences", train_data_->position()},
        {"global_batch", o_.global_batch},
        {"seq_len", o_.seq_len},
        {"train", o_.train_files},
        {"tokenizer", train_data_->tokenizer()},
        {"tokenizer_model", tokenizer_model_},
        {"vocab_size", train_data_->vocab_size()},
        {"eos_id", train_data_->eos_id()}}},
      {"schedule",
       {{"kind", "warmup_cosine"},
        {"peak_lr", schedule_.peak_lr},
        {"warmup_steps", schedule_.warmup_steps},
        {"max_steps", schedule_.max_steps},
        {"min_lr_ratio", schedule_.min_lr_ratio},
        {"lr", schedule_.at(step)}}},
      {"optimizer",
       {{"name", "adamw"},
        {"step", checkpoints::optimizer_step(*optimizer_)},
        {"betas", {o_.adamw.beta1, o_.adamw.beta2}},
        {"eps", o_.adamw.eps},
        {"weight_decay", o_.adamw.weight_decay}}},
      {"trainer",
       {{"bad_steps", bad_steps_},
        {"seed", o_.seed},
        {"precision", o_.precision == Precision::kBf16 ? "bf16" : "fp32"}}},
      {"provenance",
       {{"config", task_.resolved_config},
        {"command_line", command_line()},
        {"git_revision", SHC_GIT_REVISION},
        {"libtorch", TORCH_VERSION},
        {"libraries", parallel::library_versions()},
        {"saved_at", utc_now()}}}};
  writer_->save(step, rank_state(), run);
  last_save_ = std::chrono::steady_clock::now();
  if (!writer_->pending()) report_commit();
}

void Trainer::commit_pending_save() {
  if (!writer_->pending()) return;
  writer_->commit();
  report_commit();
}

void Trainer::report_commit() {
  std::ostringstream line;
  line << "checkpoint " << writer_->last_committed() << " saved";
  if (!o_.checkpoint_async) {
    line << " in " << std::fixed << std::setprecision(2) << writer_->last_blocking_seconds()
         << " s";
  }
  BOOST_LOG_TRIVIAL(info) << line.str();
  if (!writer_->warning().empty()) BOOST_LOG_TRIVIAL(warning) << writer_->warning();
}

int Trainer::run() {
  const int64_t start_step = resume();
  if (start_step >= o_.max_steps) {
    BOOST_LOG_TRIVIAL(info) << "the checkpoint is at step " << start_step << ", train.max_steps is "
                            << o_.max_steps << ": nothing to train";
    return kExitOk;
  }
  if (start_step == 0) validate(0);
  model_of(fsdp_.get(), model_).set_training(true);
  start_step_ = start_step;
  run_start_ = std::chrono::steady_clock::now();
  for (int64_t step = start_step + 1; step <= o_.max_steps; ++step) {
    train_step(step);
    const bool last = step == o_.max_steps;
    if (last || (o_.eval_every > 0 && step % o_.eval_every == 0)) validate(step);

    // The step boundary: every rank agrees on a signal, a time-triggered save and the state of a
    // background write, in one collective.
    const bool timed = o_.checkpoint_every_minutes > 0 &&
                       seconds_since(last_save_) >= 60.0 * o_.checkpoint_every_minutes;
    const auto flags = runtime_.all_reduce_max(
        {preemption_signal(), timed ? 1 : 0, writer_->pending() && !writer_->written() ? 1 : 0});
    if (flags[2] == 0) commit_pending_save();
    const bool preempted = flags[0] != 0;
    const bool stop = o_.stop_after_steps > 0 && step - start_step >= o_.stop_after_steps;
    if (last || preempted || stop || flags[1] != 0 ||
        (o_.checkpoint_every > 0 && step % o_.checkpoint_every == 0)) {
      save(step);
    }
    if (preempted || stop || last) {
      commit_pending_save();
      if (preempted && !last) {
        BOOST_LOG_TRIVIAL(warning)
            << "signal " << flags[0] << " received: saved step " << step << " to "
            << writer_->last_committed() << "; exiting with 75 (rerun the same command to resume)";
        return kExitPreempted;
      }
      if (stop) {
        BOOST_LOG_TRIVIAL(info) << "train.stop_after_steps reached: saved step " << step
                                << "; rerun the same command to continue";
      }
      return kExitOk;
    }
  }
  return kExitOk;
}

}  // namespace

int train(const TrainerOptions& options, const TrainingTask& task) {
  Trainer trainer(options, task);
  return trainer.run();
}

}  // namespace shc::jobs
