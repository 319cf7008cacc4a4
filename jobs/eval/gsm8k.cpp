// The GSM8K runner (jobs/eval/benchmarks.h): k-shot greedy generation, scored by the final number.
#include <algorithm>
#include <filesystem>
#include <regex>

#include "jobs/eval/benchmarks.h"
#include "jobs/eval/metrics.h"
#include "jobs/eval/prompt.h"
#include "jobs/eval/runner_support.h"
#include "jobs/job.h"

namespace shc::jobs::eval {

namespace {

constexpr const char* kBenchmark = "GSM8K";

struct Problem {
  std::string question;
  std::string solution;  // the whole "answer" field
  std::string number;    // canonical, after "####"
};

std::vector<Problem> read_problems(const std::string& path) {
  const std::string text = read_text_file(kBenchmark, path);
  std::vector<Problem> problems;
  size_t begin = 0;
  for (int64_t line = 1; begin < text.size(); ++line) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string content = text.substr(begin, end - begin);
    begin = end + 1;
    if (normalize_answer(content).empty()) continue;  // blank lines, e.g. a final newline
    const std::string where = "line " + std::to_string(line);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(content);
    } catch (const nlohmann::json::parse_error& e) {
      file_error(kBenchmark, path, where + ": " + e.what());
    }
    if (!j.is_object() || !j.contains("question") || !j["question"].is_string() ||
        !j.contains("answer") || !j["answer"].is_string()) {
      file_error(kBenchmark, path, where + ": expected {\"question\": string, \"answer\": string}");
    }
    Problem p;
    p.question = j["question"].get<std::string>();
    p.solution = j["answer"].get<std::string>();
    const size_t mark = p.solution.rfind("####");
    if (mark == std::string::npos) file_error(kBenchmark, path, where + ": answer has no \"####\"");
    const std::string after = p.solution.substr(mark + 4);
    p.number = gsm8k_number(after);
    if (p.number.empty()) {
      file_error(kBenchmark, path,
                 where + ": \"" + normalize_answer(after) + "\" after \"####\" is not a number");
    }
    problems.push_back(std::move(p));
  }
  if (problems.empty()) file_error(kBenchmark, path, "no problems");
  return problems;
}

std::string shot_text(const Problem& p) {
  return "Question: " + p.question + "\nAnswer: " + p.solution + "\n\n";
}

}  // namespace

std::string gsm8k_number(const std::string& text) {
  static const std::regex number(R"([+-]?[0-9][0-9,]*(\.[0-9]+)?)");
  const std::string trimmed = normalize_answer(text);
  if (!std::regex_match(trimmed, number)) return "";
  const bool negative = trimmed[0] == '-';
  std::string digits;
  for (char c : trimmed) {
    if (c != ',' && c != '+' && c != '-') digits += c;
  }
  std::string integer = digits.substr(0, digits.find('.'));
  std::string fraction =
      digits.find('.') == std::string::npos ? "" : digits.substr(digits.find('.') + 1);
  integer.erase(0, std::min(integer.find_first_not_of('0'), integer.size() - 1));
  fraction.erase(fraction.find_last_not_of('0') + 1);
  std::string out = fraction.empty() ? integer : integer + "." + fraction;
  return negative && out != "0" ? "-" + out : out;
}

std::string gsm8k_final_number(const std::string& completion) {
  static const std::regex number(R"(-?[0-9][0-9,]*(\.[0-9]+)?)");
  std::string last;
  for (std::sregex_iterator it(completion.begin(), completion.end(), number), end; it != end;
       ++it) {
    last = it->str();
  }
  return last.empty() ? "" : gsm8k_number(last);
}

std::vector<ExampleResult> run_gsm8k(LanguageModel& model, const std::string& benchmark_dir,
                                     const Gsm8kOptions& options) {
  check_shard(options.shard);
  check_shots(kBenchmark, options.shots);
  const int64_t budget =
      generation_budget(kBenchmark, model.context_length(), options.max_new_tokens);
  const std::string dir = (std::filesystem::path(benchmark_dir) / "gsm8k").string();
  std::string train_file;  // "" when there is none
  std::vector<std::string> scored_files;
  for (const auto& f : files_ending_in(kBenchmark, dir, ".jsonl")) {
    if (std::filesystem::path(f).filename() == "train.jsonl") {
      train_file = f;
    } else {
      scored_files.push_back(f);
    }
  }
  if (scored_files.empty()) {
    throw ExitError(kExitData, std::string(kBenchmark) + ": no *.jsonl file to score in '" + dir +
                                   "' besides train.jsonl (the shots)");
  }
  const bool shots_from_train = !train_file.empty();
  std::vector<std::string> train_shots;
  if (shots_from_train && options.shots > 0) {
    const auto train = read_problems(train_file);
    for (size_t i = 0; i < train.size() && static_cast<int64_t>(i) < options.shots; ++i) {
      train_shots.push_back(shot_text(train[i]));
    }
  }

  std::vector<ExampleResult> results;
  int64_t index = 0;  // over all scored examples, for the shard
  for (const auto& file : scored_files) {
    const auto problems = read_problems(file);
    FewShotPrompt prompt;
    size_t first_scored = 0;
    if (shots_from_train) {
      prompt.shots = train_shots;
    } else {
      for (; first_scored < problems.size() && static_cast<int64_t>(first_scored) < options.shots;
           ++first_scored) {
        prompt.shots.push_back(shot_text(problems[first_scored]));
      }
    }
    if (first_scored >= problems.size()) {
      file_error(kBenchmark, file,
                 std::to_string(problems.size()) +
                     " problems, all taken as shots (there is no train.jsonl): none is left to "
                     "score");
    }
    for (size_t i = first_scored; i < problems.size(); ++i) {
      if (index++ % options.shard.world != options.shard.rank) continue;
      prompt.question = "Question: " + problems[i].question + "\nAnswer:";
      const auto fitted =
          fit_prompt(prompt, budget, [&](const std::string& text) { return model.encode(text); });
      const std::string completion =
          model.greedy_generate(fitted.tokens, options.max_new_tokens, {"\n\n", "Question:"});
      ExampleResult r;
      r.task = task_name(file, ".jsonl");
      r.example = static_cast<int64_t>(i);
      r.prediction = gsm8k_final_number(completion);
      r.reference = problems[i].number;
      r.correct = r.prediction == r.reference;
      r.shots = fitted.shots_kept;
      r.truncated = fitted.truncated;
      results.push_back(std::move(r));
    }
  }
  return results;
}

}  // namespace shc::jobs::eval
