// What the benchmark runners (jobs/eval/benchmarks.h) score: a causal language model together with
// its tokenizer. An interface rather than SHCTransformer itself so that the runners are tested
// with scripted models whose answers are known, and so that scoring never depends on how a model
// batches, caches or places itself on a device.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shc::jobs::eval {

class LanguageModel {  // a causal LM with its tokenizer
 public:
  virtual ~LanguageModel() = default;
  virtual std::vector<uint32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<uint32_t>& ids) const = 0;
  // The longest prompt + continuation the model takes, in tokens.
  virtual int64_t context_length() const = 0;
  // log p(token | prefix) for the next position after `prefix` (size vocab), natural log.
  virtual std::vector<double> next_token_logprobs(const std::vector<uint32_t>& prefix) = 0;
  // Greedy continuation of `prompt`, at most max_new_tokens, stopping early at any of `stop`
  // strings (the returned text excludes the stop string).
  virtual std::string greedy_generate(const std::vector<uint32_t>& prompt, int64_t max_new_tokens,
                                      const std::vector<std::string>& stop) = 0;
};

}  // namespace shc::jobs::eval
