#include "jobs/model_files.h"

#include <torch/torch.h>

#include <filesystem>

#include "checkpoints/errors.h"
#include "checkpoints/file_io.h"
#include "checkpoints/layout.h"
#include "checkpoints/manifest.h"
#include "checkpoints/restore.h"
#include "checkpoints/safetensors.h"
#include "core/ssm_student.h"
#include "jobs/model_options.h"

namespace shc::jobs {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kModelPrefix = "model/";

StoredModel read_checkpoint_model(const std::string& dir) {
  const auto manifest = checkpoints::read_manifest(dir);
  StoredModel out;
  const json& run = manifest.run;
  out.family = run.at("model").at("family").get<std::string>();
  out.config = run.at("model").at("config");
  out.step = manifest.step;
  out.tokenizer = run.at("data").at("tokenizer").get<std::string>();
  out.tokenizer_model = run.at("data").value("tokenizer_model", "");
  out.eos_id = run.at("data").at("eos_id").get<int64_t>();
  // Every model tensor at full shape, assembled from the pieces of all ranks.
  checkpoints::RankState whole;
  for (const auto& [name, record] : manifest.tensors) {
    if (name.rfind(kModelPrefix, 0) != 0) continue;
    const auto dtype = checkpoints::dtype_from_name(record.dtype);
    if (!dtype) {
      throw checkpoints::CheckpointError("checkpoint '" + dir + "' tensor '" + name +
                                         "' has an unsupported dtype " + record.dtype);
    }
    auto full = torch::empty(record.shape, torch::TensorOptions().dtype(*dtype));
    out.parameters.emplace_back(name.substr(std::string(kModelPrefix).size()), full);
    whole.slices.push_back({name, record.shape, 0, full.view({-1})});
  }
  checkpoints::load_into(dir, manifest, whole, /*rank=*/-1);
  return out;
}

StoredModel read_export(const std::string& path) {
  const checkpoints::SafetensorsFile file(path);
  const auto& meta = file.metadata();
  auto field = [&](const char* key) -> const std::string& {
    const auto it = meta.find(key);
    if (it == meta.end()) {
      throw checkpoints::CheckpointError("'" + path + "' is not an SHC export (no metadata '" +
                                         key + "')");
    }
    return it->second;
  };
  if (field("format") != "shc-export") {
    throw checkpoints::CheckpointError("'" + path + "' is not an SHC export (format '" +
                                       field("format") + "')");
  }
  StoredModel out;
  out.family = field("model_family");
  try {
    out.config = json::parse(field("model_config"));
    out.step = std::stoll(field("step"));
    out.eos_id = std::stoll(field("eos_id"));
  } catch (const std::exception& e) {
    throw checkpoints::CheckpointError("corrupt metadata in '" + path + "': " + e.what());
  }
  out.tokenizer = field("tokenizer");
  out.tokenizer_model = field("tokenizer_model");
  for (const auto& entry : file.entries())
    out.parameters.emplace_back(entry.name, file.read(entry.name));
  return out;
}

}  // namespace

std::string resolve_stored_model_path(const std::string& path) {
  if (!fs::is_directory(path) || fs::exists(fs::path(path) / checkpoints::kManifestFile)) {
    return path;
  }
  if (const auto latest = checkpoints::read_latest(path)) return *latest;
  throw checkpoints::CheckpointError("'" + path +
                                     "' is neither a checkpoint (no manifest.json) nor a run "
                                     "directory (no latest)");
}

StoredModel read_stored_model(const std::string& path) {
  const std::string resolved = resolve_stored_model_path(path);
  if (fs::is_directory(resolved)) return read_checkpoint_model(resolved);
  if (!fs::exists(resolved))
    throw checkpoints::CheckpointError("no such checkpoint or export '" + path + "'");
  return read_export(resolved);
}

std::string export_config_path(const std::string& path) {
  return fs::path(path).replace_extension(".json").string();
}

void write_export(const std::string& path, const StoredModel& model, torch::Dtype dtype) {
  checkpoints::NamedTensors tensors;
  for (const auto& [name, t] : model.parameters) tensors.emplace_back(name, t.to(dtype));
  const json config = {{"model_family", model.family},
                       {"model_config", model.config},
                       {"step", model.step},
                       {"tokenizer", model.tokenizer},
                       {"tokenizer_model", model.tokenizer_model},
                       {"eos_id", model.eos_id}};
  const std::string partial = path + ".partial";
  checkpoints::write_safetensors(partial, tensors,
                                 {{"format", "shc-export"},
                                  {"format_version", std::to_string(kExportFormatVersion)},
                                  {"model_family", model.family},
                                  {"model_config", model.config.dump()},
                                  {"step", std::to_string(model.step)},
                                  {"tokenizer", model.tokenizer},
                                  {"tokenizer_model", model.tokenizer_model},
                                  {"eos_id", std::to_string(model.eos_id)}});
  fs::rename(partial, path);
  checkpoints::fsync_path(fs::absolute(path).parent_path().string());
  checkpoints::write_file_atomically(export_config_path(path), config.dump(2) + "\n");
}

std::unique_ptr<data::Tokenizer> stored_tokenizer(const StoredModel& model,
                                                  const std::string& model_path) {
  return data::tokenizer_for_id(model.tokenizer,
                                model_path.empty() ? model.tokenizer_model : model_path);
}

namespace {

// Copies the stored parameters into `model`'s, which must all be there at the same shapes.
void copy_parameters(torch::nn::Module& model, const StoredModel& stored) {
  std::map<std::string, torch::Tensor> by_name(stored.parameters.begin(), stored.parameters.end());
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    const auto it = by_name.find(item.key());
    if (it == by_name.end() || it->second.sizes() != item.value().sizes()) {
      throw checkpoints::CheckpointError(
          "the stored model " +
          std::string(it == by_name.end() ? "lacks" : "has another shape for") + " parameter '" +
          item.key() + "'");
    }
    item.value().copy_(it->second);
  }
}

// LoadedModel over a model type with forward(ids) and generate(ids, options).
template <typename Model>
class LoadedModelOf final : public LoadedModel {
 public:
  LoadedModelOf(Model model, int64_t context, std::string summary)
      : model_(std::move(model)), context_(context), summary_(std::move(summary)) {
    model_->eval();
  }
  torch::Tensor forward(const torch::Tensor& ids) override { return model_->forward(ids); }
  torch::Tensor generate(const torch::Tensor& ids, const GenerationOptions& options) override {
    return model_->generate(ids, options);
  }
  int64_t context_length() const override { return context_; }
  std::string summary() const override { return summary_; }

 private:
  Model model_;
  int64_t context_;
  std::string summary_;
};

}  // namespace

SHCTransformer load_transformer(const StoredModel& stored) {
  if (stored.family != "shc_transformer") {
    throw std::invalid_argument("a " + stored.family + " model is not an SHCTransformer");
  }
  SHCTransformer model(model_config_from_json(stored.config));
  copy_parameters(*model, stored);
  return model;
}

std::unique_ptr<LoadedModel> load_model(const StoredModel& stored) {
  if (stored.family == "shc_transformer") {
    auto model = load_transformer(stored);
    const auto& cfg = model->config();
    return std::make_unique<LoadedModelOf<SHCTransformer>>(model, cfg.max_seq_len, cfg.summary());
  }
  if (stored.family == "ssm_student") {
    const SSMConfig cfg = ssm_config_from_json(stored.config);
    SSMStudent model(cfg);
    copy_parameters(*model, stored);
    return std::make_unique<LoadedModelOf<SSMStudent>>(model, LoadedModel::kUnbounded,
                                                       cfg.summary());
  }
  throw checkpoints::CheckpointError("unknown model family '" + stored.family + "'");
}

}  // namespace shc::jobs
