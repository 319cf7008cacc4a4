// `shc train`: the training loop (SPEC §8). AdamW with decay on matrices only, linear warmup +
// cosine decay, gradient clipping, accumulation over micro-batches, fp32 or bf16 autocast, a
// NaN/Inf guard, periodic validation, a progress line and RUN_DIR/metrics.jsonl.
// Single process for now; the distributed strategies plug into the same step.
#include <torch/torch.h>

#include <boost/log/trivial.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "core/transformer.h"
#include "data/loader.h"
#include "jobs/job.h"
#include "jobs/logging.h"
#include "jobs/lr_schedule.h"
#include "jobs/metrics_log.h"
#include "jobs/model_options.h"
#include "jobs/trainer.h"

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

class TrainJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    po::options_description run("run options");
    run.add_options()("run.dir", po::value<std::string>()->default_value("runs/train"),
                      "run directory: logs/, metrics.jsonl");
    po::options_description train("train options");
    train.add_options()("train.max_steps", po::value<int64_t>()->default_value(200),
                        "optimizer steps")("train.seed", po::value<uint64_t>()->default_value(1234),
                                           "seed of the model initialisation and the data order")(
        "train.global_batch", po::value<int64_t>()->default_value(16),
        "sequences per optimizer step")(
        "train.micro_batch", po::value<int64_t>()->default_value(0),
        "sequences per forward/backward (0 = the whole batch at once); the batch is "
        "accumulated over global_batch / micro_batch micro-batches")(
        "train.seq_len", po::value<int64_t>()->default_value(128), "tokens per sequence")(
        "train.lr", po::value<double>()->default_value(1e-3), "peak learning rate")(
        "train.min_lr_ratio", po::value<double>()->default_value(0.1),
        "final learning rate as a fraction of the peak (cosine decay)")(
        "train.warmup_steps", po::value<int64_t>()->default_value(20), "linear warmup steps")(
        "train.weight_decay", po::value<double>()->default_value(0.1),
        "AdamW weight decay (matrices only)")(
        "train.beta1", po::value<double>()->default_value(0.9), "AdamW beta1")(
        "train.beta2", po::value<double>()->default_value(0.95), "AdamW beta2")(
        "train.grad_clip", po::value<double>()->default_value(1.0),
        "clip the global gradient norm to this (0 = off)")(
        "train.precision", po::value<std::string>()->default_value("fp32"), "fp32 or bf16")(
        "train.max_bad_steps", po::value<int64_t>()->default_value(3),
        "abort (exit 4) after this many consecutive steps with a NaN/Inf loss or gradient")(
        "train.eval_every", po::value<int64_t>()->default_value(50),
        "validate every this many steps (and before the first and after the last)")(
        "train.eval_batches", po::value<int64_t>()->default_value(8),
        "validation batches (of micro_batch sequences) per validation")(
        "train.log_every", po::value<int64_t>()->default_value(10), "progress line every N steps")(
        "train.threads", po::value<int>()->default_value(0),
        "intra-op threads (0 = LibTorch's default)");
    po::options_description data("data options");
    data.add_options()("data.train", po::value<std::string>(),
                       "training shards: glob(s), comma-separated")(
        "data.val", po::value<std::string>()->default_value(""),
        "validation shards: glob(s), comma-separated (empty = no validation)");
    options.add(run).add(train).add(data);
    add_model_options(options);
  }

  int run(const po::variables_map& vm) override {
    const auto cfg = model_config_from(vm);
    if (!vm.count("data.train")) throw std::invalid_argument("data.train is required");
    const int64_t max_steps = vm["train.max_steps"].as<int64_t>();
    const int64_t global_batch = vm["train.global_batch"].as<int64_t>();
    int64_t micro_batch = vm["train.micro_batch"].as<int64_t>();
    if (micro_batch == 0) micro_batch = global_batch;
    const int64_t seq_len = vm["train.seq_len"].as<int64_t>();
    const uint64_t seed = vm["train.seed"].as<uint64_t>();
    const auto precision = parse_precision(vm["train.precision"].as<std::string>());
    const int64_t eval_every = vm["train.eval_every"].as<int64_t>();
    const int64_t eval_batches = vm["train.eval_batches"].as<int64_t>();
    const int64_t log_every = std::max<int64_t>(1, vm["train.log_every"].as<int64_t>());
    const int64_t max_bad_steps = vm["train.max_bad_steps"].as<int64_t>();
    const double grad_clip = vm["train.grad_clip"].as<double>();
    if (max_steps < 1 || global_batch < 1 || micro_batch < 1 || global_batch % micro_batch != 0) {
      throw std::invalid_argument(
          "train.max_steps and train.global_batch must be positive and "
          "train.global_batch a multiple of train.micro_batch");
    }
    if (seq_len < 1 || seq_len + 1 > cfg.max_seq_len) {
      throw std::invalid_argument("train.seq_len (" + std::to_string(seq_len) +
                                  ") + 1 must be at most model.max_seq_len (" +
                                  std::to_string(cfg.max_seq_len) + ")");
    }
    if (int threads = vm["train.threads"].as<int>(); threads > 0) torch::set_num_threads(threads);

    const std::string run_dir = vm["run.dir"].as<std::string>();
    std::filesystem::create_directories(run_dir);
    add_rank_log_file(run_dir, 0);
    MetricsLog metrics(run_dir + "/metrics.jsonl");

    data::LoaderOptions train_opts;
    train_opts.files = shard_files(vm["data.train"].as<std::string>());
    train_opts.seq_len = seq_len;
    train_opts.seed = seed;
    train_opts.global_batch = global_batch;
    train_opts.expected_vocab = cfg.vocab_size;
    data::Loader train_data(train_opts);
    std::unique_ptr<data::Loader> val_data;
    if (const auto val = vm["data.val"].as<std::string>(); !val.empty()) {
      auto val_opts = train_opts;
      val_opts.files = shard_files(val);
      val_opts.global_batch = micro_batch;
      val_data = std::make_unique<data::Loader>(val_opts);
    }

    torch::manual_seed(seed);
    SHCTransformer model(cfg);
    BOOST_LOG_TRIVIAL(info) << cfg.summary() << ": " << model->num_parameters() << " parameters; "
                            << train_data.sequences_per_epoch() << " training sequences of "
                            << seq_len + 1 << " tokens";
    AdamWSettings adamw;
    adamw.lr = vm["train.lr"].as<double>();
    adamw.weight_decay = vm["train.weight_decay"].as<double>();
    adamw.beta1 = vm["train.beta1"].as<double>();
    adamw.beta2 = vm["train.beta2"].as<double>();
    auto optimizer = make_adamw(*model, adamw);
    LrSchedule schedule{adamw.lr, vm["train.warmup_steps"].as<int64_t>(), max_steps,
                        vm["train.min_lr_ratio"].as<double>()};

    auto validate = [&](int64_t step) {
      if (!val_data) return;
      torch::NoGradGuard no_grad;
      model->eval();
      val_data->restore(0);  // the same validation sequences every time
      double sum = 0;
      for (int64_t i = 0; i < eval_batches; ++i) {
        auto ids = to_tensor(val_data->next_batch(), micro_batch);
        AutocastScope autocast(precision, torch::kCPU);
        sum += model->forward(ids, ids).item<double>();
      }
      model->train();
      const double val_loss = sum / double(eval_batches);
      metrics.write(step, {{"val_loss", val_loss}});
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
      auto batch = to_tensor(train_data.next_batch(), global_batch);
      const double loss = accumulate_gradients(model, batch, micro_batch, precision);
      const double grad_norm =
          grad_clip > 0 ? torch::nn::utils::clip_grad_norm_(model->parameters(), grad_clip)
                        : torch::nn::utils::clip_grad_norm_(
                              model->parameters(), std::numeric_limits<double>::infinity());
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
        optimizer->step();
      }
      const double step_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
      const double tokens_per_s = tokens_per_step / step_seconds;
      metrics.write(
          step,
          {{"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm}, {"tokens_per_s", tokens_per_s}});
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

SHC_REGISTER_JOB(TrainJob, "train", "train a model on HDF5 token shards");

}  // namespace
}  // namespace shc::jobs
