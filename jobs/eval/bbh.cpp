// The BBH runner (jobs/eval/benchmarks.h): k-shot greedy generation, scored by exact match.
#include <filesystem>

#include "jobs/eval/benchmarks.h"
#include "jobs/eval/metrics.h"
#include "jobs/eval/prompt.h"
#include "jobs/eval/runner_support.h"

namespace shc::jobs::eval {

namespace {

constexpr const char* kBenchmark = "BBH";

struct Example {
  std::string input;
  std::string target;
};

std::vector<Example> read_examples(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(kBenchmark, path));
  } catch (const nlohmann::json::parse_error& e) {
    file_error(kBenchmark, path, e.what());
  }
  if (!j.is_object() || !j.contains("examples") || !j["examples"].is_array()) {
    file_error(kBenchmark, path, "expected an object with an \"examples\" array");
  }
  std::vector<Example> examples;
  for (const auto& e : j["examples"]) {
    if (!e.is_object() || !e.contains("input") || !e["input"].is_string() ||
        !e.contains("target") || !e["target"].is_string()) {
      file_error(kBenchmark, path,
                 "examples[" + std::to_string(examples.size()) +
                     "]: expected {\"input\": string, \"target\": string}");
    }
    examples.push_back({e["input"].get<std::string>(), e["target"].get<std::string>()});
  }
  return examples;
}

}  // namespace

std::vector<ExampleResult> run_bbh(LanguageModel& model, const std::string& benchmark_dir,
                                   const BbhOptions& options) {
  check_shard(options.shard);
  check_shots(kBenchmark, options.shots);
  const int64_t budget =
      generation_budget(kBenchmark, model.context_length(), options.max_new_tokens);
  const std::string dir = (std::filesystem::path(benchmark_dir) / "bbh").string();

  std::vector<ExampleResult> results;
  int64_t index = 0;  // over all scored examples, for the shard
  for (const auto& file : files_ending_in(kBenchmark, dir, ".json")) {
    const auto examples = read_examples(file);
    const size_t shots = static_cast<size_t>(options.shots);
    if (examples.size() <= shots) {
      file_error(kBenchmark, file,
                 std::to_string(examples.size()) + " examples; with the first " +
                     std::to_string(shots) + " taken as shots none is left to score");
    }
    FewShotPrompt prompt;
    for (size_t i = 0; i < shots; ++i) {
      prompt.shots.push_back("Q: " + examples[i].input + "\nA: " + examples[i].target + "\n\n");
    }
    for (size_t i = shots; i < examples.size(); ++i) {
      if (index++ % options.shard.world != options.shard.rank) continue;
      prompt.question = "Q: " + examples[i].input + "\nA:";
      const auto fitted =
          fit_prompt(prompt, budget, [&](const std::string& text) { return model.encode(text); });
      const std::string completion =
          model.greedy_generate(fitted.tokens, options.max_new_tokens, {"\n"});
      ExampleResult r;
      r.task = task_name(file, ".json");
      r.example = static_cast<int64_t>(i);
      r.prediction = normalize_answer(completion);
      r.reference = examples[i].target;
      r.correct = exact_match(completion, examples[i].target);
      r.shots = fitted.shots_kept;
      r.truncated = fitted.truncated;
      results.push_back(std::move(r));
    }
  }
  return results;
}

}  // namespace shc::jobs::eval
