// The one training loop (SPEC §8): every training job (train, distill) runs its model through it.
// It owns the data loaders, the parallel strategy (DDP, FSDP, hybrid), AdamW with warmup + cosine
// schedule, gradient clipping and accumulation, precision, the NaN/Inf guard, validation, the
// progress line and metrics.jsonl, checkpoint save and resume (checkpoints/), and preemption
// (SIGUSR1/SIGTERM -> checkpoint -> exit 75). A job gives it a TrainingTask: how to build the
// model (unit by unit, parallel/sharded_model.h) and the loss of one micro-batch, with any extra
// metrics that loss reports.
#pragma once

#include <torch/types.h>
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "jobs/train_step.h"
#include "parallel/sharded_model.h"

namespace shc::jobs {

struct TrainerOptions {
  std::string run_dir;
  // train.*
  int64_t max_steps = 200, stop_after_steps = 0;
  uint64_t seed = 1234;
  int64_t global_batch = 16, micro_batch = 0, seq_len = 128;
  AdamWSettings adamw;
  double min_lr_ratio = 0.1;
  int64_t warmup_steps = 20;
  double grad_clip = 1.0;
  Precision precision = Precision::kFp32;
  int64_t max_bad_steps = 3, eval_every = 50, eval_batches = 8, log_every = 10;
  int threads = 0;
  // parallel.*
  std::string strategy = "ddp";
  int shard_group_size = 0;
  bool reshard_after_forward = true;
  std::string backend = "auto";
  double bucket_mb = 25.0, timeout_s = 600.0;
  // data.*
  std::string train_files, val_files;
  // checkpoint.*
  int64_t checkpoint_every = 0;
  double checkpoint_every_minutes = 0;
  int keep_last = 2;
  int64_t keep_every = 0;
  bool checkpoint_async = false;
  std::string resume;  // "" = RUN_DIR/latest if any, "none", or a checkpoint directory
  bool strict = false;
};

// Declares the run.*, train.*, parallel.*, data.* and checkpoint.* options.
void add_trainer_options(boost::program_options::options_description& options);
// Reads them; std::invalid_argument for values that cannot work (checked again against the world
// size when training starts).
TrainerOptions trainer_options_from(const boost::program_options::variables_map& vm);

// What a micro-batch's loss function returns: the loss to differentiate and named extra metrics
// (detached scalars, e.g. {"kl", ...}), averaged over micro-batches and ranks into metrics.jsonl.
struct MicroBatchResult {
  torch::Tensor loss;
  std::vector<std::pair<std::string, torch::Tensor>> metrics;
};
// The trained model's logits for token ids (batch, T): the replicated model's units one after the
// other, or the sharded runtime's forward.
using Forward = std::function<torch::Tensor(const torch::Tensor& ids)>;
// The loss of one micro-batch (rows of seq_len + 1 tokens).
using LossFunction =
    std::function<MicroBatchResult(const Forward& forward, const torch::Tensor& ids)>;

// Where a micro-batch is in the run: its optimizer step and the global index of each row's
// sequence (data/loader.h), the same whatever the world size and accumulation.
struct MicroBatchInfo {
  int64_t step = 0, max_steps = 0;
  int64_t first_sequence = 0, rows = 0;
};

struct TrainingTask {
  std::string model_family;     // recorded in checkpoints, e.g. "shc_transformer"
  nlohmann::json model_config;  // recorded; resuming with a different one exits 3 naming fields
  std::string model_summary;    // one line for the log
  int64_t vocab_size = 0, max_seq_len = 0;
  // The tokenizer the data must be prepared with (e.g. a teacher's), "" = any.
  std::string expected_tokenizer;
  // The model, unit by unit; built after torch::manual_seed(train.seed), the same on every rank.
  parallel::ShardedModelBuilder build;
  LossFunction loss;
  // Optional: runs before each training micro-batch's forward (e.g. anneal a temperature, key
  // Gumbel noise by the rows' global sequence indices).
  std::function<void(parallel::ShardedModel&, const MicroBatchInfo&)> before_micro_batch;
  // The resolved options of the job, recorded as provenance.
  nlohmann::json resolved_config;
};

// Runs the whole training (on every rank of the job); returns the exit code: kExitOk, or
// kExitPreempted after a signal-triggered checkpoint. Errors are thrown (ExitError,
// checkpoints::CheckpointError, data::DataError, std::invalid_argument).
int train(const TrainerOptions& options, const TrainingTask& task);

// The resolved options of a variables_map as JSON (provenance).
nlohmann::json options_to_json(const boost::program_options::variables_map& vm);

}  // namespace shc::jobs
