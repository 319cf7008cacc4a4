// `shc analyze-routing --checkpoint PATH | --run RUN_DIR --data.val GLOB --out DIR`: the
// RoutingAnalyzer statistics (core/routing_analyzer.h) of one checkpoint or export, or of every
// checkpoint of a run, over the same validation sequences; DIR/analysis.json, DIR/layers.csv and
// PNG plots (jobs/routing_report.h). Data-parallel under mpirun: each rank analyses its slice of
// every global batch and rank 0 combines the statistics exactly (sums, counts, minima, maxima,
// histograms), so the result equals one process's within floating-point summation order.
#include <torch/torch.h>
#include <boost/log/trivial.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "checkpoints/errors.h"
#include "checkpoints/file_io.h"
#include "checkpoints/layout.h"
#include "core/routing_analyzer.h"
#include "data/loader.h"
#include "jobs/job.h"
#include "jobs/job_helpers.h"
#include "jobs/model_files.h"
#include "jobs/routing_report.h"
#include "parallel/communicator.h"
#include "parallel/runtime.h"

namespace shc::jobs {
namespace {

namespace fs = std::filesystem;

struct AnalysisOptions {
  std::string val_files, out_dir;
  int64_t batches = 0, batch_size = 0, seq_len = 0;
};

// Every rank's analyzer state summed into rank 0's (other ranks' results are partial).
void combine_over_ranks(RoutingAnalyzer& analyzer, parallel::Communicator& comm) {
  if (comm.size() == 1) return;
  const std::vector<double> mine = analyzer.state();
  const int64_t length = int64_t(mine.size());
  auto local = comm.empty(length, torch::kDouble);
  std::copy(mine.begin(), mine.end(), local.data_ptr<double>());
  auto all = comm.empty(length * comm.size(), torch::kDouble);
  comm.all_gather(local, all);
  if (comm.rank() != 0) return;
  for (int r = 1; r < comm.size(); ++r) {
    const double* theirs = all.data_ptr<double>() + r * length;
    analyzer.merge_state(std::vector<double>(theirs, theirs + length));
  }
}

class AnalyzeRoutingJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    options.add_options()(
        "checkpoint", po::value<std::string>()->value_name("PATH"),
        "a checkpoint directory, a run directory (its latest checkpoint) or an export "
        "(.safetensors)")("run", po::value<std::string>()->value_name("RUN_DIR"),
                          "every checkpoint of a run, by step (adds plots over training steps)")(
        "data.val", po::value<std::string>()->required()->value_name("GLOB"),
        "validation shards: glob(s), comma-separated")(
        "out", po::value<std::string>()->required()->value_name("DIR"),
        "where analysis.json, layers.csv and the PNG plots go")(
        "batches", po::value<int64_t>()->default_value(8)->value_name("N"),
        "global batches analysed per checkpoint (fewer if the validation set is smaller)")(
        "batch_size", po::value<int64_t>()->default_value(8)->value_name("B"),
        "sequences per global batch, split over the ranks (a multiple of the world size)")(
        "seq_len", po::value<int64_t>()->default_value(128)->value_name("T"),
        "tokens per sequence")("threads", po::value<int>()->default_value(0)->value_name("N"),
                               "intra-op threads per rank (0 = this rank's share of the cores)");
  }

  int run(const po::variables_map& vm) override {
    if (vm.count("checkpoint") == vm.count("run")) {
      throw std::invalid_argument("give exactly one of --checkpoint PATH and --run RUN_DIR");
    }
    AnalysisOptions o;
    o.val_files = vm["data.val"].as<std::string>();
    o.out_dir = vm["out"].as<std::string>();
    o.batches = vm["batches"].as<int64_t>();
    o.batch_size = vm["batch_size"].as<int64_t>();
    o.seq_len = vm["seq_len"].as<int64_t>();
    if (o.batches < 1 || o.seq_len < 1)
      throw std::invalid_argument("--batches and --seq_len must be positive");

    auto& runtime = parallel::Runtime::instance();
    if (o.batch_size < 1 || o.batch_size % runtime.world_size() != 0) {
      throw std::invalid_argument("--batch_size (" + std::to_string(o.batch_size) +
                                  ") must be a positive multiple of the world size (" +
                                  std::to_string(runtime.world_size()) + ")");
    }
    const int threads = vm["threads"].as<int>();
    torch::set_num_threads(threads > 0 ? threads : default_threads(runtime));

    std::vector<std::string> sources;
    if (vm.count("checkpoint")) {
      sources.push_back(vm["checkpoint"].as<std::string>());
    } else {
      // The list rank 0 sees, on every rank: the run may still be writing checkpoints.
      const std::string run_dir = vm["run"].as<std::string>();
      sources = agreed_list([&] { return checkpoints::step_dirs(run_dir); }, runtime);
      if (sources.empty())
        throw checkpoints::CheckpointError("run directory '" + run_dir + "' has no checkpoints");
    }
    analyze(sources, o, runtime);
    return kExitOk;
  }

 private:
  static void analyze(const std::vector<std::string>& sources, const AnalysisOptions& o,
                      parallel::Runtime& runtime) {
    auto comm = parallel::make_communicator("mpi", torch::kCPU);
    std::unique_ptr<data::Loader> loader;
    int64_t batches = o.batches;
    ordered_json analysis;
    for (const auto& source : sources) {
      const auto started = std::chrono::steady_clock::now();
      const StoredModel stored = read_stored_model(source);
      SHCTransformer model = load_transformer(stored);
      const ModelConfig& cfg = model->config();
      if (o.seq_len > cfg.max_seq_len) {
        throw std::invalid_argument("--seq_len (" + std::to_string(o.seq_len) +
                                    ") exceeds the model's max_seq_len (" +
                                    std::to_string(cfg.max_seq_len) + ")");
      }
      if (!loader) {
        loader = open_validation_data(o, cfg.vocab_size, runtime);
        batches = std::min(o.batches, loader->sequences_per_epoch() / o.batch_size);
        analysis = header(stored, cfg, o, *loader, batches, comm->size());
        if (cfg.residual == ResidualKind::kResidual) {
          BOOST_LOG_TRIVIAL(info) << "model.residual = residual: one stream and H = 1, no routing "
                                     "to analyse; the report lists the sublayers only, no plots";
        }
      }
      if (loader->tokenizer() != stored.tokenizer) {
        throw data::DataError("the validation shards were prepared with tokenizer '" +
                              loader->tokenizer() + "', the model of '" + source + "' with '" +
                              stored.tokenizer + "'");
      }
      model->to(runtime.device());
      RoutingAnalyzer analyzer(model);
      loader->restore(0);  // the same sequences for every checkpoint
      for (int64_t b = 0; b < batches; ++b) {
        auto rows = batch_tensor(loader->next_batch(), loader->local_batch());
        analyzer.analyze_batch(rows.narrow(1, 0, o.seq_len).to(runtime.device()));
      }
      combine_over_ranks(analyzer, *comm);
      if (!runtime.is_root()) continue;
      ordered_json checkpoint = ordered_json::parse(analyzer.to_json());
      checkpoint.erase("model");
      ordered_json record = {{"source", source}, {"step", stored.step}};
      record.update(checkpoint);
      record["summary"] = summarize_sublayers(record["sublayers"]);
      BOOST_LOG_TRIVIAL(info)
          << "step " << stored.step << " (" << source << "): " << analyzer.tokens_seen()
          << " tokens in "
          << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()
          << " s; " << record["summary"].dump();
      analysis["checkpoints"].push_back(std::move(record));
    }
    if (runtime.is_root()) write_report(analysis, o.out_dir);
  }

  static std::unique_ptr<data::Loader> open_validation_data(const AnalysisOptions& o,
                                                            int64_t vocab_size,
                                                            const parallel::Runtime& runtime) {
    data::LoaderOptions lo;
    lo.files = data::expand_glob_list(o.val_files);
    lo.seq_len = o.seq_len;
    lo.seed = 0;  // a fixed order: every analysis of these shards sees the same sequences
    lo.rank = runtime.rank();
    lo.world_size = runtime.world_size();
    lo.global_batch = o.batch_size;
    lo.expected_vocab = vocab_size;
    auto loader = std::make_unique<data::Loader>(lo);
    const int64_t available = loader->sequences_per_epoch() / o.batch_size;
    if (available == 0) {
      throw data::DataError("the validation shards '" + o.val_files + "' hold " +
                            std::to_string(loader->sequences_per_epoch()) + " sequences of " +
                            std::to_string(o.seq_len + 1) + " tokens, fewer than one batch of " +
                            std::to_string(o.batch_size));
    }
    if (available < o.batches) {
      BOOST_LOG_TRIVIAL(warning) << "the validation shards hold " << available << " batches of "
                                 << o.batch_size << " sequences; analysing those, not "
                                 << o.batches;
    }
    return loader;
  }

  static ordered_json header(const StoredModel& stored, const ModelConfig& cfg,
                             const AnalysisOptions& o, const data::Loader& loader, int64_t batches,
                             int world_size) {
    return {{"format", "shc-routing-analysis"},
            {"format_version", 1},
            {"model",
             {{"family", stored.family},
              {"summary", cfg.summary()},
              {"config", ordered_json::parse(stored.config.dump())}}},
            {"data",
             {{"val", o.val_files},
              {"files", loader.files()},
              {"tokenizer", loader.tokenizer()},
              {"seq_len", o.seq_len},
              {"batch_size", o.batch_size},
              {"batches", batches},
              {"sequences", batches * o.batch_size}}},
            {"world_size", world_size},
            {"checkpoints", ordered_json::array()}};
  }

  // CSV and plots first, analysis.json last: once it exists, the report is complete.
  static void write_report(ordered_json& analysis, const std::string& dir) {
    fs::create_directories(dir);
    write_layers_csv(analysis, (fs::path(dir) / "layers.csv").string());
    analysis["plots"] = write_routing_plots(analysis, dir);
    checkpoints::write_file_atomically((fs::path(dir) / "analysis.json").string(),
                                       analysis.dump(2) + "\n");
    BOOST_LOG_TRIVIAL(info) << "wrote " << dir << "/analysis.json, layers.csv and "
                            << analysis["plots"].size() << " plot(s)";
  }
};

SHC_REGISTER_JOB(AnalyzeRoutingJob, "analyze-routing",
                 "routing statistics (spectral norms, entropy, n_eff, composite gain) of a "
                 "checkpoint or a whole run, with JSON, CSV and PNG plots");

}  // namespace
}  // namespace shc::jobs
