#include "jobs/eval/trained_model.h"

#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>

namespace shc::jobs::eval {
namespace {

torch::Tensor as_ids(const std::vector<uint32_t>& tokens) {
  std::vector<int64_t> ids(tokens.begin(), tokens.end());
  return torch::tensor(ids, torch::kLong).unsqueeze(0);
}

}  // namespace

TrainedLanguageModel::TrainedLanguageModel(LoadedModel& model,
                                           std::unique_ptr<data::Tokenizer> tokenizer)
    : model_(model), tokenizer_(std::move(tokenizer)) {}

std::vector<uint32_t> TrainedLanguageModel::encode(const std::string& text) const {
  return tokenizer_->encode(text);
}

std::string TrainedLanguageModel::decode(const std::vector<uint32_t>& ids) const {
  return tokenizer_->decode(ids);
}

int64_t TrainedLanguageModel::context_length() const {
  return model_.context_length();
}

std::vector<double> TrainedLanguageModel::next_token_logprobs(const std::vector<uint32_t>& prefix) {
  if (prefix.empty()) throw std::invalid_argument("next_token_logprobs: empty prefix");
  torch::NoGradGuard no_grad;
  const auto logits = model_.forward(as_ids(prefix)).select(1, -1).squeeze(0);
  const auto logp = torch::log_softmax(logits.to(torch::kDouble), -1).contiguous();
  return std::vector<double>(logp.data_ptr<double>(), logp.data_ptr<double>() + logp.numel());
}

std::string TrainedLanguageModel::greedy_generate(const std::vector<uint32_t>& prompt,
                                                  int64_t max_new_tokens,
                                                  const std::vector<std::string>& stop) {
  if (prompt.empty()) throw std::invalid_argument("greedy_generate: empty prompt");
  GenerationOptions options;
  options.temperature = 0;
  options.eos_id = tokenizer_->eos_id();
  options.max_new_tokens =
      std::min<int64_t>(max_new_tokens, model_.context_length() - int64_t(prompt.size()));
  if (options.max_new_tokens < 1) return "";
  std::vector<uint32_t> generated;
  std::string text;
  size_t cut = std::string::npos;
  options.on_token = [&](const torch::Tensor& next) {
    const int64_t id = next[0].item<int64_t>();
    if (id == options.eos_id) return;
    generated.push_back(uint32_t(id));
    text = tokenizer_->decode(generated);
    for (const auto& s : stop) cut = std::min(cut, text.find(s));
  };
  options.stop = [&] { return cut != std::string::npos; };
  model_.generate(as_ids(prompt), options);
  return cut == std::string::npos ? text : text.substr(0, cut);
}

}  // namespace shc::jobs::eval
