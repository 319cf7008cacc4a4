// `shc export --checkpoint DIR --out FILE.safetensors`: the model of a checkpoint written by any
// world size and strategy, consolidated into one safetensors file that Python reads without this
// project, with its config as FILE.json (jobs/model_files.h documents names and metadata). Runs
// on one process.
#include <boost/log/trivial.hpp>

#include <filesystem>
#include <string>

#include "jobs/job.h"
#include "jobs/model_files.h"

namespace shc::jobs {
namespace {

class ExportJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    options.add_options()(
        "checkpoint", po::value<std::string>()->required()->value_name("DIR"),
        "a checkpoint directory (RUN_DIR/checkpoints/step_<N>) or a run directory (its latest)")(
        "out", po::value<std::string>()->required()->value_name("FILE"),
        "the export, e.g. model.safetensors (its config goes to model.json)")(
        "dtype", po::value<std::string>()->default_value("fp32")->value_name("TYPE"),
        "fp32 (readable by safetensors.numpy), bf16 or fp16");
  }

  int run(const po::variables_map& vm) override {
    const std::string dtype_name = vm["dtype"].as<std::string>();
    const torch::Dtype dtype =
        dtype_name == "fp32"   ? torch::kFloat
        : dtype_name == "bf16" ? torch::kBFloat16
        : dtype_name == "fp16"
            ? torch::kHalf
            : throw std::invalid_argument("--dtype must be fp32, bf16 or fp16, got '" + dtype_name +
                                          "'");
    const std::string source = vm["checkpoint"].as<std::string>();
    const std::string out = vm["out"].as<std::string>();
    const StoredModel model = read_stored_model(source);
    int64_t elements = 0;
    for (const auto& [name, t] : model.parameters) elements += t.numel();
    write_export(out, model, dtype);
    BOOST_LOG_TRIVIAL(info) << "exported " << model.family << " step " << model.step << " ("
                            << model.parameters.size() << " tensors, " << elements
                            << " parameters, " << dtype_name << ") from " << source << " to " << out
                            << " (" << std::filesystem::file_size(out) / 1024 << " KiB), config "
                            << export_config_path(out);
    return kExitOk;
  }
};

SHC_REGISTER_JOB(ExportJob, "export",
                 "consolidate a checkpoint (any world size, any strategy) into one safetensors "
                 "file + config JSON");

}  // namespace
}  // namespace shc::jobs
