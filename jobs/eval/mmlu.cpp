// The MMLU runner (jobs/eval/benchmarks.h): k-shot prompts from the dev split, scored by the
// log-probability of each answer letter's own token after the prompt. The Python reference read
// the score of the BOS token instead, which is the same for every letter (SPEC §10).
#include <algorithm>
#include <array>
#include <filesystem>
#include <stdexcept>

#include "jobs/eval/benchmarks.h"
#include "jobs/eval/csv.h"
#include "jobs/eval/prompt.h"
#include "jobs/eval/runner_support.h"
#include "jobs/job.h"

namespace shc::jobs::eval {

namespace {

constexpr const char* kBenchmark = "MMLU";
constexpr std::array<char, 4> kLetters = {'A', 'B', 'C', 'D'};

struct Question {
  std::string text;  // question and choices, ending in "Answer:"
  char answer = 'A';
};

std::vector<Question> read_questions(const std::string& path) {
  std::vector<CsvRecord> records;
  try {
    records = parse_csv(read_text_file(kBenchmark, path));
  } catch (const std::invalid_argument& e) {
    file_error(kBenchmark, path, e.what());
  }
  std::vector<Question> questions;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    const std::string where = "record " + std::to_string(i + 1);
    if (r.size() != 6) {
      file_error(kBenchmark, path,
                 where + " has " + std::to_string(r.size()) +
                     " columns; expected 6 (question,A,B,C,D,answer)");
    }
    if (r[5].size() != 1 ||
        std::find(kLetters.begin(), kLetters.end(), r[5][0]) == kLetters.end()) {
      file_error(kBenchmark, path, where + ": answer '" + r[5] + "' is not one of A, B, C, D");
    }
    Question q;
    q.text = r[0];
    for (size_t c = 0; c < 4; ++c) q.text += std::string("\n") + kLetters[c] + ". " + r[c + 1];
    q.text += "\nAnswer:";
    q.answer = r[5][0];
    questions.push_back(std::move(q));
  }
  return questions;
}

// The prompt's tokens and each letter's token after them (see benchmarks.h).
struct Scoring {
  std::vector<uint32_t> prefix;
  std::array<uint32_t, 4> letter_tokens{};
};

Scoring scoring_tokens(const LanguageModel& model, const std::string& prompt) {
  std::array<std::vector<uint32_t>, 4> encoded;
  for (size_t c = 0; c < 4; ++c) encoded[c] = model.encode(prompt + " " + kLetters[c]);
  size_t shared = 0;
  while (std::all_of(encoded.begin(), encoded.end(), [&](const auto& e) {
    return shared < e.size() && e[shared] == encoded[0][shared];
  })) {
    ++shared;
  }
  Scoring s;
  s.prefix.assign(encoded[0].begin(), encoded[0].begin() + static_cast<int64_t>(shared));
  for (size_t c = 0; c < 4; ++c) {
    if (shared >= encoded[c].size()) {
      throw ExitError(kExitData, "MMLU: the tokenizer encodes answer letter " +
                                     std::string(1, kLetters[c]) + " as no token of its own");
    }
    s.letter_tokens[c] = encoded[c][shared];
    for (size_t d = 0; d < c; ++d) {
      if (s.letter_tokens[d] == s.letter_tokens[c]) {
        throw ExitError(kExitData, std::string("MMLU: the tokenizer gives answer letters ") +
                                       kLetters[d] + " and " + kLetters[c] + " the same token");
      }
    }
  }
  return s;
}

std::string subject_words(std::string subject) {
  std::replace(subject.begin(), subject.end(), '_', ' ');
  return subject;
}

}  // namespace

std::vector<ExampleResult> run_mmlu(LanguageModel& model, const std::string& benchmark_dir,
                                    const MmluOptions& options) {
  check_shard(options.shard);
  check_shots(kBenchmark, options.shots);
  const std::string root = (std::filesystem::path(benchmark_dir) / "mmlu").string();
  const std::string dev_dir = root + "/dev";
  const auto test_files = files_ending_in(kBenchmark, root + "/test", "_test.csv");
  if (options.shots > 0) require_directory(kBenchmark, dev_dir);
  // The letter is the one token of the continuation.
  const int64_t budget = model.context_length() - 1;

  std::vector<ExampleResult> results;
  int64_t index = 0;  // over all scored examples, for the shard
  for (const auto& test_file : test_files) {
    const std::string subject = task_name(test_file, "_test.csv");
    const auto questions = read_questions(test_file);
    if (questions.empty()) file_error(kBenchmark, test_file, "no questions");
    FewShotPrompt prompt;
    prompt.header = "The following are multiple choice questions (with answers) about " +
                    subject_words(subject) + ".\n\n";
    if (options.shots > 0) {
      const std::string dev_file = dev_dir + "/" + subject + "_dev.csv";
      const auto dev = read_questions(dev_file);
      for (size_t i = 0; i < dev.size() && static_cast<int64_t>(i) < options.shots; ++i) {
        prompt.shots.push_back(dev[i].text + " " + dev[i].answer + "\n\n");
      }
    }
    for (size_t i = 0; i < questions.size(); ++i) {
      if (index++ % options.shard.world != options.shard.rank) continue;
      prompt.question = questions[i].text;
      const auto fitted = fit_prompt(prompt, budget, [&](const std::string& text) {
        return scoring_tokens(model, text).prefix;
      });
      Scoring s = scoring_tokens(model, fitted.text);
      s.prefix = fitted.tokens;  // cut like the fitted prompt when the question was too long
      const auto logprobs = model.next_token_logprobs(s.prefix);
      size_t best = 0;
      for (size_t c = 0; c < 4; ++c) {
        if (s.letter_tokens[c] >= logprobs.size()) {
          throw std::out_of_range("MMLU: answer token " + std::to_string(s.letter_tokens[c]) +
                                  " is outside the model's " + std::to_string(logprobs.size()) +
                                  "-token vocabulary");
        }
        if (logprobs[s.letter_tokens[c]] > logprobs[s.letter_tokens[best]]) best = c;
      }
      ExampleResult r;
      r.task = subject;
      r.example = static_cast<int64_t>(i);
      r.correct = kLetters[best] == questions[i].answer;
      r.shots = fitted.shots_kept;
      r.truncated = fitted.truncated;
      r.prediction = std::string(1, kLetters[best]);
      r.reference = std::string(1, questions[i].answer);
      results.push_back(std::move(r));
    }
  }
  return results;
}

}  // namespace shc::jobs::eval
