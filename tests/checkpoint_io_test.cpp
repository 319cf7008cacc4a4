// Checkpoint layout, manifest, retention and the export round trip (checkpoints/, jobs/
// model_files.h) in one process; tests/checkpoint_end_to_end.py covers resume, resharding and
// failures through `shc train` under mpirun.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "checkpoints/errors.h"
#include "checkpoints/layout.h"
#include "checkpoints/manifest.h"
#include "checkpoints/rank_state.h"
#include "checkpoints/restore.h"
#include "checkpoints/writer.h"
#include "core/transformer.h"
#include "jobs/metrics_log.h"
#include "jobs/model_files.h"
#include "jobs/model_options.h"
#include "jobs/train_step.h"
#include "parallel/runtime.h"

namespace shc {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("shc_checkpoint_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
  static inline int counter_ = 0;
};

ModelConfig small_config() {
  ModelConfig cfg = get_config("tiny");
  cfg.n_layers = 2;
  cfg.hidden_dim = 32;
  cfg.n_heads = 2;
  cfg.ffn_dim = 64;
  return cfg;
}

nlohmann::json run_record(const ModelConfig& cfg) {
  return {{"model", {{"family", "shc_transformer"}, {"config", jobs::model_config_to_json(cfg)}}},
          {"data", {{"tokenizer", "byte:v1"}, {"eos_id", 256}}}};
}

TEST(CheckpointLayout, StepNamesAndRetention) {
  EXPECT_EQ(checkpoints::step_of("/a/checkpoints/step_12"), 12);
  EXPECT_EQ(checkpoints::step_of("/a/checkpoints/.tmp-12"), std::nullopt);
  EXPECT_EQ(checkpoints::step_of("step_"), std::nullopt);
  EXPECT_EQ(checkpoints::step_of("step_1x"), std::nullopt);
  TempDir run;
  for (int step = 1; step <= 7; ++step)
    fs::create_directories(checkpoints::step_dir(run.str(), step));
  fs::create_directories(checkpoints::temporary_dir(run.str(), 8));
  // keep_last 2 and keep_every 3: steps 3 and 6 stay forever, 6 and 7 are the newest.
  checkpoints::apply_retention(run.str(), 2, 3, checkpoints::step_dir(run.str(), 7));
  std::vector<std::string> left;
  for (const auto& d : checkpoints::step_dirs(run.str())) left.push_back(fs::path(d).filename());
  EXPECT_EQ(left, (std::vector<std::string>{"step_3", "step_6", "step_7"}));
  // What latest names survives even when it is not among the newest.
  checkpoints::apply_retention(run.str(), 2, 0, checkpoints::step_dir(run.str(), 3));
  left.clear();
  for (const auto& d : checkpoints::step_dirs(run.str())) left.push_back(fs::path(d).filename());
  EXPECT_EQ(left, (std::vector<std::string>{"step_3", "step_6", "step_7"}));
  checkpoints::apply_retention(run.str(), 2, 0, "");
  EXPECT_EQ(checkpoints::step_dirs(run.str()).size(), 2u);
  EXPECT_TRUE(fs::exists(checkpoints::temporary_dir(run.str(), 8)));  // never a step_*
}

TEST(CheckpointManifest, RoundTripAndCorruption) {
  TempDir dir;
  checkpoints::Manifest m;
  m.step = 42;
  m.world_size = 2;
  m.run = {{"note", "x\"y"}, {"lr", 0.1 + 0.2}};
  m.tensors["model/w"] = {{2, 3}, "F32", {{"rank00000.safetensors", 0, 6, "xxh3-64:00"}}};
  m.ranks = {{"rank00000.safetensors", {{"rng/cpu", "xxh3-64:01"}}}, {"rank00001.safetensors", {}}};
  checkpoints::write_manifest(dir.str(), m);
  const auto back = checkpoints::read_manifest(dir.str());
  EXPECT_EQ(back.to_json(), m.to_json());

  const std::string path = dir.str() + "/manifest.json";
  std::string text;
  {
    std::ifstream in(path);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto expect_error = [&](const std::string& content, const std::string& message) {
    std::ofstream(path, std::ios::trunc) << content;
    try {
      checkpoints::read_manifest(dir.str());
      ADD_FAILURE() << "no error for " << message;
    } catch (const checkpoints::CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  };
  std::string edited = text;
  edited.replace(edited.find("\"step\": 42"), 10, "\"step\": 43");
  expect_error(edited, "checksum mismatch in manifest");
  expect_error(text.substr(0, text.size() / 2), "corrupt manifest");
  fs::remove(path);
  try {
    checkpoints::read_manifest(dir.str());
    ADD_FAILURE() << "no error for a missing manifest";
  } catch (const checkpoints::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("missing manifest"), std::string::npos);
  }
}

TEST(MetricsLog, TruncateKeepsStepsUpToTheCheckpoint) {
  TempDir dir;
  const std::string path = dir.str() + "/metrics.jsonl";
  {
    jobs::MetricsLog log(path);
    for (int step = 0; step <= 5; ++step) log.write(step, {{"loss", 1.0 / (step + 1)}});
  }
  std::ofstream(path, std::ios::app) << "{\"step\": 6, \"lo";  // cut short by a crash
  EXPECT_EQ(jobs::truncate_metrics_after(path, 3), 3);
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[3].rfind("{\"step\":3,", 0), 0u) << lines[3];
}

// A checkpoint written by the writer reads back as the same model, through an export too: the
// loaded models give the same logits as the original, bit for bit.
TEST(Export, RoundTripKeepsLogits) {
  TempDir run;
  torch::manual_seed(7);
  const ModelConfig cfg = small_config();
  SHCTransformer model(cfg);
  parallel::NamedParameters named;
  for (const auto& item : model->named_parameters()) named.emplace_back(item.key(), item.value());
  auto optimizer = jobs::make_adamw(named, jobs::AdamWSettings{});
  auto& runtime = parallel::Runtime::instance();
  checkpoints::CheckpointWriter writer(run.str(), runtime.rank(), runtime.world_size(), {});
  auto state = checkpoints::replicated_state(named, *optimizer, 0, 1);
  writer.save(3, state, run_record(cfg));
  EXPECT_EQ(writer.last_committed(), checkpoints::step_dir(run.str(), 3));
  EXPECT_EQ(checkpoints::read_latest(run.str()), checkpoints::step_dir(run.str(), 3));

  const auto ids = torch::randint(0, cfg.vocab_size, {2, 9}, torch::kLong);
  model->eval();
  const auto expected = model->forward(ids);
  const auto stored = jobs::read_stored_model(run.str());
  EXPECT_EQ(stored.step, 3);
  EXPECT_EQ(stored.tokenizer, "byte:v1");
  auto from_checkpoint = jobs::load_transformer(stored);
  from_checkpoint->eval();
  EXPECT_TRUE(torch::equal(from_checkpoint->forward(ids), expected));

  const std::string file = run.str() + "/model.safetensors";
  jobs::write_export(file, stored, torch::kFloat);
  EXPECT_TRUE(fs::exists(run.str() + "/model.json"));
  auto from_export = jobs::load_transformer(jobs::read_stored_model(file));
  from_export->eval();
  EXPECT_TRUE(torch::equal(from_export->forward(ids), expected));

  // Another config cannot take these weights.
  auto other = stored;
  other.config["hidden_dim"] = 64;
  other.config["n_heads"] = 2;
  EXPECT_THROW(jobs::load_transformer(other), checkpoints::CheckpointError);
}

}  // namespace
}  // namespace shc
