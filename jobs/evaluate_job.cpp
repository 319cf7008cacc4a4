// `shc evaluate --checkpoint PATH [--data.val GLOB] [--benchmarks mmlu,gsm8k,bbh]
// [--benchmark_dir DIR] [--out FILE.json]`: perplexity and token accuracy on validation shards, and
// the benchmark runners of jobs/eval/ on local copies of MMLU, GSM8K and BBH. Data-parallel under
// mpirun: each rank takes its share of the validation batches and of the benchmark examples, and
// the sums and per-example results are combined, so the figures equal one process's (the
// perplexity up to the order of a floating-point sum).
#include <torch/torch.h>

#include <boost/log/trivial.hpp>

#include <iostream>

#include "checkpoints/file_io.h"
#include "data/loader.h"
#include "jobs/eval/benchmarks.h"
#include "jobs/eval/metrics.h"
#include "jobs/eval/trained_model.h"
#include "jobs/job.h"
#include "jobs/job_helpers.h"
#include "jobs/model_files.h"
#include "parallel/runtime.h"

namespace shc::jobs {
namespace {

using nlohmann::json;

class EvaluateJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    options.add_options()(
        "checkpoint", po::value<std::string>()->required()->value_name("PATH"),
        "a checkpoint directory, a run directory (its latest checkpoint) or an export")(
        "data.val", po::value<std::string>()->default_value("")->value_name("GLOB"),
        "validation shards for perplexity and token accuracy (glob(s), comma-separated)")(
        "eval.global_batch", po::value<int64_t>()->default_value(8)->value_name("N"),
        "sequences per validation batch over all ranks (a multiple of the world size)")(
        "eval.batches", po::value<int64_t>()->default_value(0)->value_name("N"),
        "validation batches (0 = every whole batch of the validation set)")(
        "eval.seq_len", po::value<int64_t>()->default_value(128)->value_name("T"),
        "tokens per validation sequence")(
        "benchmarks", po::value<std::string>()->default_value("")->value_name("LIST"),
        "comma-separated: mmlu, gsm8k, bbh (read from --benchmark_dir)")(
        "benchmark_dir", po::value<std::string>()->default_value("")->value_name("DIR"),
        "holds mmlu/{dev,test}/*.csv, gsm8k/*.jsonl, bbh/*.json in their public formats")(
        "mmlu.shots", po::value<int64_t>()->default_value(5), "MMLU examples in each prompt")(
        "gsm8k.shots", po::value<int64_t>()->default_value(8), "GSM8K examples in each prompt")(
        "bbh.shots", po::value<int64_t>()->default_value(3), "BBH examples in each prompt")(
        "max_new_tokens", po::value<int64_t>()->default_value(256)->value_name("N"),
        "longest generated answer (GSM8K, BBH)")(
        "tokenizer_model", po::value<std::string>()->default_value("")->value_name("FILE"),
        "the SentencePiece model, when the one recorded at training has moved")(
        "out", po::value<std::string>()->default_value("")->value_name("FILE"),
        "also write the results as JSON to FILE (rank 0)");
  }

  int run(const po::variables_map& vm) override {
    auto& runtime = parallel::Runtime::instance();
    torch::set_num_threads(default_threads(runtime));
    const std::string path = vm["checkpoint"].as<std::string>();
    const auto benchmarks = split_list(vm["benchmarks"].as<std::string>());
    const std::string val = vm["data.val"].as<std::string>();
    if (val.empty() && benchmarks.empty()) {
      throw std::invalid_argument("nothing to evaluate: give --data.val and/or --benchmarks");
    }
    // Every rank evaluates the checkpoint rank 0 resolved (a run may still be writing new ones).
    const StoredModel stored = read_agreed_stored_model(path, runtime);
    const auto model = load_model(stored);
    json results = {{"checkpoint", path},
                    {"model_family", stored.family},
                    {"step", stored.step},
                    {"world_size", runtime.world_size()}};
    if (!val.empty()) results["validation"] = validation(vm, *model, val, stored);
    if (!benchmarks.empty()) {
      eval::TrainedLanguageModel lm(
          *model, stored_tokenizer(stored, vm["tokenizer_model"].as<std::string>()));
      const std::string dir = vm["benchmark_dir"].as<std::string>();
      if (dir.empty()) throw std::invalid_argument("--benchmarks needs --benchmark_dir");
      const eval::Shard shard{runtime.rank(), runtime.world_size()};
      const int64_t max_new = vm["max_new_tokens"].as<int64_t>();
      for (const auto& name : benchmarks) {
        std::vector<eval::ExampleResult> mine;
        std::string metric;
        if (name == "mmlu") {
          mine = eval::run_mmlu(lm, dir, {vm["mmlu.shots"].as<int64_t>(), shard});
          metric = eval::kMmluMetric;
        } else if (name == "gsm8k") {
          mine = eval::run_gsm8k(lm, dir, {vm["gsm8k.shots"].as<int64_t>(), max_new, shard});
          metric = eval::kGsm8kMetric;
        } else if (name == "bbh") {
          mine = eval::run_bbh(lm, dir, {vm["bbh.shots"].as<int64_t>(), max_new, shard});
          metric = eval::kBbhMetric;
        } else {
          throw std::invalid_argument("unknown benchmark '" + name + "' (mmlu, gsm8k, bbh)");
        }
        // Every rank's examples to rank 0, which scores the whole benchmark.
        const auto all = runtime.gather_strings(json(mine).dump());
        if (runtime.is_root()) {
          std::vector<eval::ExampleResult> merged;
          for (const auto& text : all) {
            for (auto& r : json::parse(text).get<std::vector<eval::ExampleResult>>()) {
              merged.push_back(std::move(r));
            }
          }
          results["benchmarks"][name] = eval::summarize(merged, metric);
          BOOST_LOG_TRIVIAL(info) << name << ": " << metric << " "
                                  << results["benchmarks"][name]["overall"][metric] << " over "
                                  << merged.size() << " examples";
        }
      }
    }
    if (runtime.is_root()) {
      const std::string text = results.dump(2, ' ', false, json::error_handler_t::replace);
      std::cout << text << std::endl;
      if (const auto out = vm["out"].as<std::string>(); !out.empty()) {
        checkpoints::write_file_atomically(out, text + "\n");
      }
    }
    return kExitOk;
  }

 private:
  // Mean next-token NLL, perplexity and argmax accuracy over the validation set: each rank sums
  // over its rows of every global batch, and the sums are added over the ranks.
  static json validation(const po::variables_map& vm, LoadedModel& model, const std::string& val,
                         const StoredModel& stored) {
    auto& runtime = parallel::Runtime::instance();
    data::LoaderOptions o;
    o.files = data::expand_glob_list(val);
    o.seq_len = vm["eval.seq_len"].as<int64_t>();
    o.rank = runtime.rank();
    o.world_size = runtime.world_size();
    o.global_batch = vm["eval.global_batch"].as<int64_t>();
    o.expected_vocab = stored.config.at("vocab_size").get<int64_t>();
    if (o.seq_len < 1 || o.seq_len + 1 > model.context_length()) {
      throw std::invalid_argument("eval.seq_len + 1 must be in [2, the model's context]");
    }
    if (o.global_batch < 1 || o.global_batch % o.world_size != 0) {
      throw std::invalid_argument(
          "eval.global_batch must be a positive multiple of the world size");
    }
    data::Loader loader(o);
    if (loader.tokenizer() != stored.tokenizer) {
      throw ExitError(kExitData, "the validation data is tokenized by " + loader.tokenizer() +
                                     ", the model was trained on " + stored.tokenizer);
    }
    const int64_t available = loader.sequences_per_epoch() / o.global_batch;
    int64_t batches = vm["eval.batches"].as<int64_t>();
    if (batches <= 0 || batches > available) batches = available;
    if (batches == 0) {
      throw ExitError(kExitData, "the validation set holds fewer than eval.global_batch (" +
                                     std::to_string(o.global_batch) + ") sequences");
    }
    torch::NoGradGuard no_grad;
    double nll = 0, correct = 0, tokens = 0;
    for (int64_t b = 0; b < batches; ++b) {
      const auto ids = batch_tensor(loader.next_batch(), loader.local_batch());
      const auto logits = model.forward(ids.narrow(1, 0, o.seq_len)).to(torch::kDouble);
      const auto targets = ids.narrow(1, 1, o.seq_len);
      nll += torch::nll_loss(torch::log_softmax(logits, -1).reshape({-1, logits.size(-1)}),
                             targets.reshape({-1}), {}, at::Reduction::Sum)
                 .item<double>();
      correct += (logits.argmax(-1) == targets).sum().item<double>();
      tokens += double(targets.numel());
    }
    const auto sums = sum_over_ranks({nll, correct, tokens});
    const double total_tokens = sums[2];
    return {{"loss", sums[0] / total_tokens},
            {"perplexity", eval::perplexity(sums[0], int64_t(total_tokens))},
            {"token_accuracy", eval::token_accuracy(int64_t(sums[1]), int64_t(total_tokens))},
            {"tokens", int64_t(total_tokens)},
            {"sequences", batches * o.global_batch}};
  }

  static std::vector<double> sum_over_ranks(const std::vector<double>& values) {
    auto& runtime = parallel::Runtime::instance();
    std::vector<double> out(values.size(), 0.0);
    // Exact: each rank's values travel as text and rank 0 adds them in rank order.
    const auto all = runtime.gather_strings(json(values).dump());
    std::string summed;
    if (runtime.is_root()) {
      for (const auto& text : all) {
        const auto v = json::parse(text).get<std::vector<double>>();
        for (size_t i = 0; i < out.size(); ++i) out[i] += v[i];
      }
      summed = json(out).dump();
    }
    runtime.broadcast_string(summed);
    return json::parse(summed).get<std::vector<double>>();
  }
};

SHC_REGISTER_JOB(EvaluateJob, "evaluate",
                 "perplexity on validation shards and MMLU / GSM8K / BBH on local copies");

}  // namespace
}  // namespace shc::jobs
