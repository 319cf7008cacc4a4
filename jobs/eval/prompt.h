// k-shot prompts cut to fit a model's context. The benchmarks put solved examples ("shots")
// before the question; when the whole prompt is longer than the model takes it is cut from the
// left, keeping the question, in this order:
//   1. whole shots are dropped, the first (farthest from the question) first;
//   2. then the header (an instruction before the shots, e.g. MMLU's "The following are ...");
//   3. then, if the question alone is still too long, its first tokens are cut so that exactly
//      the last `budget` tokens remain.
// The result is the longest prompt of this sequence that fits; a shot is never cut in part.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace shc::jobs::eval {

struct FewShotPrompt {
  std::string header;              // text before the shots; may be empty
  std::vector<std::string> shots;  // each a complete solved example with its separator
  std::string question;            // the example to answer, ending where the answer begins
};

struct FittedPrompt {
  std::string text;              // header (if kept) + kept shots + question, before step 3
  std::vector<uint32_t> tokens;  // what the model is given
  int64_t shots_kept = 0;        // the last shots_kept shots of the prompt
  bool header_kept = true;
  int64_t question_tokens_cut = 0;  // tokens cut from the question's beginning (step 3)
  bool truncated = false;  // a shot, the (non-empty) header or question tokens were dropped
};

// Maps a prompt text to the tokens that must fit (normally the tokenizer's encode).
using PromptEncoder = std::function<std::vector<uint32_t>(const std::string& text)>;

// The header, shots and question concatenated in that order.
std::string prompt_text(const FewShotPrompt& prompt);

// The longest prompt of the sequence above whose encoding has at most `budget` tokens.
// std::invalid_argument when budget < 1.
FittedPrompt fit_prompt(const FewShotPrompt& prompt, int64_t budget, const PromptEncoder& encode);

}  // namespace shc::jobs::eval
