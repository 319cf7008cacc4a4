// The evaluation LanguageModel (jobs/eval/language_model.h) over a trained model of any family
// (jobs/model_files.h LoadedModel) and the tokenizer it was trained with: next-token
// log-probabilities from a full forward, and greedy continuations decoded incrementally (KV cache
// or recurrent state), cut at the first stop string.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "jobs/eval/language_model.h"
#include "jobs/model_files.h"

namespace shc::jobs::eval {

class TrainedLanguageModel : public LanguageModel {
 public:
  // `model` must outlive this object.
  TrainedLanguageModel(LoadedModel& model, std::unique_ptr<data::Tokenizer> tokenizer);

  std::vector<uint32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<uint32_t>& ids) const override;
  int64_t context_length() const override;
  std::vector<double> next_token_logprobs(const std::vector<uint32_t>& prefix) override;
  // Stops at the tokenizer's EOS, after max_new_tokens, or once the decoded continuation holds a
  // stop string (returned without it).
  std::string greedy_generate(const std::vector<uint32_t>& prompt, int64_t max_new_tokens,
                              const std::vector<std::string>& stop) override;

 private:
  LoadedModel& model_;
  std::unique_ptr<data::Tokenizer> tokenizer_;
};

}  // namespace shc::jobs::eval
