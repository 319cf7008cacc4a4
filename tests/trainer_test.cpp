// The one training loop (jobs/trainer.h) driven as a library, the way `distill` will: a task's
// extra metrics reach metrics.jsonl averaged over micro-batches and ranks, and a second run in
// the same directory resumes instead of training again. Runs under mpirun with 1, 2 and 4 ranks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "core/transformer.h"
#include "data_test_util.h"
#include "jobs/job.h"
#include "jobs/logging.h"
#include "jobs/model_options.h"
#include "jobs/trainer.h"
#include "parallel/runtime.h"
#include "parallel/transformer_units.h"

namespace shc {
namespace {

std::vector<nlohmann::json> read_records(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(Trainer, ExtraMetricsAreAveragedOverMicroBatchesAndRanks) {
  auto& runtime = parallel::Runtime::instance();
  const int rank = runtime.rank(), world = runtime.world_size();
  data::test::TempDir dir;  // per rank: each rank writes its own identical shard
  std::vector<uint32_t> tokens(4000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint32_t((i * 7919 + i / 13) % 256);
  data::test::make_shard(dir.file("train-00000.h5"), tokens, 257, "byte:v1", 256);

  ModelConfig cfg = get_config("tiny");
  cfg.n_layers = 1;
  cfg.hidden_dim = 32;
  cfg.n_heads = 2;
  cfg.ffn_dim = 64;
  jobs::TrainerOptions options;
  options.run_dir = dir.file("run");  // rank 0's directory is every rank's
  options.max_steps = 2;
  options.global_batch = 8;
  options.micro_batch = 1;  // 8 / world micro-batches per rank
  options.seq_len = 16;
  options.threads = 1;
  options.eval_every = 0;
  options.warmup_steps = 1;
  options.train_files = dir.file("train-*.h5");
  jobs::TrainingTask task;
  task.model_family = "shc_transformer";
  task.model_config = jobs::model_config_to_json(cfg);
  task.model_summary = cfg.summary();
  task.vocab_size = cfg.vocab_size;
  task.max_seq_len = cfg.max_seq_len;
  task.build = parallel::TransformerUnits::builder(cfg);
  task.loss = [rank](const jobs::Forward& forward, const torch::Tensor& ids) {
    auto loss = next_token_loss(forward(ids), ids);
    return jobs::MicroBatchResult{
        loss, {{"twice_loss", 2 * loss.detach()}, {"rank", torch::scalar_tensor(double(rank))}}};
  };
  ASSERT_EQ(jobs::train(options, task), jobs::kExitOk);

  if (rank == 0) {
    const auto records = read_records(dir.file("run/metrics.jsonl"));
    ASSERT_EQ(records.size(), 2u);
    for (const auto& r : records) {
      EXPECT_NEAR(r["twice_loss"].get<double>(), 2 * r["loss"].get<double>(),
                  1e-6 * r["loss"].get<double>());
      EXPECT_DOUBLE_EQ(r["rank"].get<double>(), (world - 1) / 2.0);  // the mean over ranks
    }
  }
  // The run is complete: training it again resumes from its last checkpoint and trains nothing.
  ASSERT_EQ(jobs::train(options, task), jobs::kExitOk);
  if (rank == 0) {
    EXPECT_EQ(read_records(dir.file("run/metrics.jsonl")).size(), 2u);
  }
  runtime.barrier();  // rank 0 still reads the run directory that its TempDir removes
}

}  // namespace
}  // namespace shc

int main(int argc, char** argv) {
  auto& runtime = shc::parallel::Runtime::instance();
  shc::jobs::init_logging(runtime.rank(), "warning", false);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
