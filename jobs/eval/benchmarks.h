// Benchmark runners of `shc evaluate` (SPEC §8) over local copies in their public formats, under
// one directory DIR:
//   MMLU  (Hendrycks et al., "Measuring Massive Multitask Language Understanding", ICLR 2021):
//         DIR/mmlu/test/{subject}_test.csv and DIR/mmlu/dev/{subject}_dev.csv, no header row,
//         columns question,A,B,C,D,answer (answer one of A-D). Scored by log-likelihood.
//   GSM8K (Cobbe et al., "Training Verifiers to Solve Math Word Problems", 2021):
//         DIR/gsm8k/*.jsonl, one {"question": ..., "answer": "... #### 42"} per line. Scored by
//         greedy generation and the final number.
//   BBH   (Suzgun et al., "Challenging BIG-Bench Tasks and Whether Chain-of-Thought Can Solve
//         Them", 2022): DIR/bbh/{task}.json = {"examples": [{"input": ..., "target": ...}]}.
//         Scored by greedy generation and exact match (jobs/eval/metrics.h).
//
// Prompts (the shots are whole solved examples; prompts longer than the model's context are cut
// from the left as jobs/eval/prompt.h says, within a budget of context_length() - 1 tokens for
// MMLU and context_length() - max_new_tokens for the generation benchmarks):
//   MMLU: the format of the MMLU reference code, with single spaces:
//           "The following are multiple choice questions (with answers) about {subject}.\n\n"
//           then per shot "{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer: {X}\n\n"
//           then the question in the same form ending in "Answer:".
//         {subject} is the file's subject with '_' read as ' '. Shots: the first k rows of the
//         subject's dev file, as many as it has up to k (the dev file must exist when k > 0).
//         The answer letter's token: for each letter L the prompt is encoded as prompt + " L";
//         the four encodings share a prefix (for a byte tokenizer the prompt and the space, for
//         a tokenizer with " A" pieces the prompt) and L's token is the first token after it.
//         The model is given that shared prefix - the real prompt, never a BOS token alone -
//         and the prediction is the letter whose token has the highest log-probability at the
//         next position (ties: the earlier letter).
//   GSM8K: per shot "Question: {question}\nAnswer: {answer}\n\n" (the whole reference solution),
//         then "Question: {question}\nAnswer:"; generation stops at "\n\n" or "Question:".
//         Shots: the first k examples of DIR/gsm8k/train.jsonl when that file exists (it is then
//         not scored, every other *.jsonl is); otherwise the first k examples of each scored
//         file, which are then not scored. The prediction is the last number in the
//         completion; the reference is the text after "####". Numbers compare exactly after
//         canonicalisation (gsm8k_number).
//   BBH:  per shot "Q: {input}\nA: {target}\n\n", then "Q: {input}\nA:"; generation stops at the
//         end of the line ("\n": every BBH target is one line). Shots: the first k examples of
//         the same task's file, which are then not scored (the BBH repository's separate
//         chain-of-thought prompt files are not part of this format).
//
// Results: each runner returns one ExampleResult per example it scored; summarize() turns the
// results of all ranks into per-task and overall JSON. Data parallelism: with Shard{rank, world}
// a runner scores only the examples whose index - counted over the benchmark's scored examples,
// tasks in name order, examples in file order - has index % world == rank; every rank still
// reads and checks every file, so a broken file fails on all ranks alike.
//
// Errors: a missing benchmark directory, a task without examples left to score, or a malformed
// file (bad JSON or CSV, a wrong column count, an answer letter outside A-D, no "####") throw
// ExitError(kExitData) naming the directory or file (and the line or record). A budget that
// leaves no room for a prompt (max_new_tokens >= context_length()) is ExitError(kExitUsage).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "jobs/eval/language_model.h"

namespace shc::jobs::eval {

struct Shard {
  int64_t rank = 0;
  int64_t world = 1;
};

struct ExampleResult {
  std::string task;     // MMLU subject, GSM8K file name without ".jsonl", BBH task
  int64_t example = 0;  // position in the task's file (0-based, counting shots taken from it)
  bool correct = false;
  int64_t shots = 0;       // shots in the prompt the model was given
  bool truncated = false;  // the prompt lost shots, its header or question tokens to the budget
  std::string prediction;  // MMLU letter, GSM8K number ("" if none), BBH normalised completion
  std::string reference;   // MMLU letter, GSM8K number, BBH target
};
// JSON (de)serialisation, e.g. to gather the results of every rank on one.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ExampleResult, task, example, correct, shots, truncated,
                                   prediction, reference)

// The metric each benchmark reports, the key summarize() is given.
inline constexpr const char* kMmluMetric = "accuracy";
inline constexpr const char* kGsm8kMetric = "exact_match";
inline constexpr const char* kBbhMetric = "exact_match";

struct MmluOptions {
  int64_t shots = 5;
  Shard shard;
};

struct Gsm8kOptions {
  int64_t shots = 8;
  int64_t max_new_tokens = 256;
  Shard shard;
};

struct BbhOptions {
  int64_t shots = 3;
  int64_t max_new_tokens = 128;
  Shard shard;
};

// `benchmark_dir` is DIR above (holding mmlu/, gsm8k/, bbh/).
std::vector<ExampleResult> run_mmlu(LanguageModel& model, const std::string& benchmark_dir,
                                    const MmluOptions& options = {});
std::vector<ExampleResult> run_gsm8k(LanguageModel& model, const std::string& benchmark_dir,
                                     const Gsm8kOptions& options = {});
std::vector<ExampleResult> run_bbh(LanguageModel& model, const std::string& benchmark_dir,
                                   const BbhOptions& options = {});

// The results of every rank (any order) as
//   {"tasks": {TASK: {METRIC: correct / n, "n", "correct", "truncated"}, ...},
//    "overall": {METRIC, "macro_METRIC", "n", "correct", "truncated", "tasks"}}
// where "overall"'s METRIC is the micro average (every example weighs the same, as the MMLU
// reference code reports) and "macro_METRIC" the unweighted mean over tasks (as the BBH paper
// reports). std::invalid_argument when `results` is empty or holds one (task, example) twice.
nlohmann::json summarize(const std::vector<ExampleResult>& results, const std::string& metric);

// A GSM8K number in canonical form: commas removed, a leading '+' and leading zeros dropped,
// trailing zeros of a fraction and a bare '.' dropped, "-0" as "0" ("1,000.50" -> "1000.5").
// "" when `text` (trimmed) is not a number: [+-]?digits with commas between them [.digits].
std::string gsm8k_number(const std::string& text);
// The last number in a completion (a maximal run "-?digit[digits,]*(.digits)?"), canonical;
// "" when there is none.
std::string gsm8k_final_number(const std::string& completion);

}  // namespace shc::jobs::eval
