#include "jobs/eval/prompt.h"

#include <stdexcept>

namespace shc::jobs::eval {

namespace {

std::string join(const std::string& header, const std::vector<std::string>& shots, size_t first,
                 const std::string& question) {
  std::string text = header;
  for (size_t i = first; i < shots.size(); ++i) text += shots[i];
  return text + question;
}

}  // namespace

std::string prompt_text(const FewShotPrompt& prompt) {
  return join(prompt.header, prompt.shots, 0, prompt.question);
}

FittedPrompt fit_prompt(const FewShotPrompt& prompt, int64_t budget, const PromptEncoder& encode) {
  if (budget < 1) {
    throw std::invalid_argument("fit_prompt: token budget " + std::to_string(budget) +
                                " leaves no room for a prompt");
  }
  FittedPrompt fitted;
  // Step 1: drop shots from the first until the prompt fits.
  for (size_t first = 0; first <= prompt.shots.size(); ++first) {
    fitted.text = join(prompt.header, prompt.shots, first, prompt.question);
    fitted.tokens = encode(fitted.text);
    if (static_cast<int64_t>(fitted.tokens.size()) <= budget) {
      fitted.shots_kept = static_cast<int64_t>(prompt.shots.size() - first);
      fitted.truncated = first > 0;
      return fitted;
    }
  }
  fitted.truncated = true;
  if (!prompt.header.empty()) {  // step 2; else the last try above was the question alone
    fitted.header_kept = false;
    fitted.text = prompt.question;
    fitted.tokens = encode(fitted.text);
  }
  const int64_t excess = static_cast<int64_t>(fitted.tokens.size()) - budget;
  if (excess > 0) {  // step 3
    fitted.tokens.erase(fitted.tokens.begin(), fitted.tokens.begin() + excess);
    fitted.question_tokens_cut = excess;
  }
  return fitted;
}

}  // namespace shc::jobs::eval
