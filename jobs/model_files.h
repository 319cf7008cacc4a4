// Trained models as files (SPEC §7 export, §8): reading the model out of a checkpoint written by
// any world size and strategy, or out of an export; writing an export. Every job that loads a
// model (export, inspect, and the jobs that generate, evaluate or distil from one) goes through
// here.
//
// An export is one safetensors file (https://github.com/huggingface/safetensors) that Python
// reads without this project: each parameter under its model name (e.g. "tok_embeddings.weight",
// "blocks.0.attn.q_proj.weight", the names of SHCTransformer::named_parameters()) at its full
// shape, fp32 by default; metadata "format" = "shc-export", "format_version", "model_family",
// "model_config" (JSON), "step", "tokenizer", "tokenizer_model", "eos_id". The config is also
// written beside it as FILE.json (FILE.safetensors -> FILE.json).
#pragma once

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/transformer.h"
#include "data/tokenizer.h"

namespace shc::jobs {

inline constexpr int kExportFormatVersion = 1;

struct StoredModel {
  std::string family;  // "shc_transformer"
  nlohmann::json config;
  int64_t step = 0;
  std::string tokenizer;        // what the training data was prepared with, e.g. "byte:v1"
  std::string tokenizer_model;  // its SentencePiece model file as recorded at training, or ""
  int64_t eos_id = -1;
  std::vector<std::pair<std::string, torch::Tensor>> parameters;  // full shape, stored dtype
};

// From a checkpoint directory (its manifest; every piece's checksum verified), a run directory
// (its latest checkpoint) or an export file. checkpoints::CheckpointError naming the file on any
// problem.
StoredModel read_stored_model(const std::string& path);
// What read_stored_model reads for `path`: a run directory's latest checkpoint directory, or
// `path` itself. CheckpointError for a run directory without `latest`.
std::string resolve_stored_model_path(const std::string& path);

// Writes `model` as an export at `path` (parameters converted to `dtype`) and its config beside
// it; both written atomically.
void write_export(const std::string& path, const StoredModel& model, torch::Dtype dtype);
// Where write_export puts the config: `path` with its extension replaced by ".json".
std::string export_config_path(const std::string& path);

// The tokenizer the model was trained with: `model_path` when given (e.g. --tokenizer_model),
// else the SentencePiece model recorded at training. DataError when that model is missing or is
// another model than the one recorded (checked by hash).
std::unique_ptr<data::Tokenizer> stored_tokenizer(const StoredModel& model,
                                                  const std::string& model_path = {});

// A trained language model of any family (shc_transformer, ssm_student), as the jobs that run
// one see it: logits, generation, how long a sequence it takes. In evaluation mode.
class LoadedModel {
 public:
  // The context of a model with no position limit (the recurrent student).
  static constexpr int64_t kUnbounded = int64_t(1) << 40;
  virtual ~LoadedModel() = default;
  virtual torch::Tensor forward(const torch::Tensor& ids) = 0;  // (batch, T) -> logits
  virtual torch::Tensor generate(const torch::Tensor& ids, const GenerationOptions& options) = 0;
  virtual int64_t context_length() const = 0;
  virtual std::string summary() const = 0;
};
// The stored model as its family's module (fp32, CPU). CheckpointError for an unknown family or
// parameters that do not fit the config.
std::unique_ptr<LoadedModel> load_model(const StoredModel& model);

// An SHCTransformer (fp32, CPU) holding the stored parameters. std::invalid_argument for another
// family, CheckpointError for a parameter that is missing or of another shape.
SHCTransformer load_transformer(const StoredModel& model);

}  // namespace shc::jobs
