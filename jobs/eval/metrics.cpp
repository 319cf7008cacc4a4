#include "jobs/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <unordered_map>

namespace shc::jobs::eval {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

// Counts of the n-grams of `tokens`, each keyed by its words joined with spaces (words hold no
// whitespace, so the key is unambiguous).
std::unordered_map<std::string, int64_t> ngram_counts(const std::vector<std::string>& tokens,
                                                      size_t n) {
  std::unordered_map<std::string, int64_t> counts;
  for (size_t i = 0; i + n <= tokens.size(); ++i) {
    std::string key = tokens[i];
    for (size_t j = 1; j < n; ++j) key += ' ' + tokens[i + j];
    ++counts[key];
  }
  return counts;
}

}  // namespace

std::vector<std::string> whitespace_tokens(const std::string& text) {
  std::vector<std::string> tokens;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    size_t end = i;
    while (end < text.size() && !is_space(text[end])) ++end;
    if (end > i) tokens.push_back(text.substr(i, end - i));
    i = end;
  }
  return tokens;
}

std::string normalize_answer(const std::string& text) {
  std::string out;
  for (const auto& token : whitespace_tokens(text)) {
    if (!out.empty()) out += ' ';
    out += token;
  }
  return out;
}

bool exact_match(const std::string& prediction, const std::string& reference) {
  return normalize_answer(prediction) == normalize_answer(reference);
}

F1Score token_f1(const std::string& prediction, const std::string& reference) {
  const auto pred = whitespace_tokens(prediction);
  const auto ref = whitespace_tokens(reference);
  if (pred.empty() && ref.empty()) return {1, 1, 1};
  if (pred.empty() || ref.empty()) return {};
  std::unordered_map<std::string, int64_t> ref_counts;
  for (const auto& t : ref) ++ref_counts[t];
  int64_t common = 0;
  for (const auto& t : pred) {
    auto it = ref_counts.find(t);
    if (it != ref_counts.end() && it->second > 0) {
      --it->second;
      ++common;
    }
  }
  if (common == 0) return {};
  F1Score s;
  s.precision = static_cast<double>(common) / static_cast<double>(pred.size());
  s.recall = static_cast<double>(common) / static_cast<double>(ref.size());
  s.f1 = 2 * s.precision * s.recall / (s.precision + s.recall);
  return s;
}

BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::string>& references) {
  if (hypotheses.size() != references.size()) {
    throw std::invalid_argument("corpus_bleu: " + std::to_string(hypotheses.size()) +
                                " hypotheses but " + std::to_string(references.size()) +
                                " references");
  }
  BleuScore s;
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    const auto hyp = whitespace_tokens(hypotheses[i]);
    const auto ref = whitespace_tokens(references[i]);
    s.hypothesis_length += static_cast<int64_t>(hyp.size());
    s.reference_length += static_cast<int64_t>(ref.size());
    for (size_t n = 1; n <= 4; ++n) {
      const auto ref_counts = ngram_counts(ref, n);
      for (const auto& [gram, count] : ngram_counts(hyp, n)) {
        auto it = ref_counts.find(gram);
        // Clipping: an n-gram counts at most as often as it occurs in the reference.
        if (it != ref_counts.end()) s.matches[n - 1] += std::min(count, it->second);
        s.totals[n - 1] += count;
      }
    }
  }
  double log_mean = 0;
  bool any_zero = false;
  for (size_t n = 0; n < 4; ++n) {
    s.precisions[n] =
        s.totals[n] > 0 ? static_cast<double>(s.matches[n]) / static_cast<double>(s.totals[n]) : 0;
    if (s.precisions[n] == 0) {
      any_zero = true;
    } else {
      log_mean += std::log(s.precisions[n]) / 4;
    }
  }
  const double c = static_cast<double>(s.hypothesis_length);
  const double r = static_cast<double>(s.reference_length);
  if (c > r) {
    s.brevity_penalty = 1;
  } else {
    s.brevity_penalty = c > 0 ? std::exp(1 - r / c) : 0;
  }
  s.bleu = any_zero ? 0 : s.brevity_penalty * std::exp(log_mean);
  return s;
}

double perplexity(double nll_sum, int64_t tokens) {
  if (tokens <= 0) {
    throw std::invalid_argument("perplexity: token count " + std::to_string(tokens) +
                                " is not positive");
  }
  return std::exp(nll_sum / static_cast<double>(tokens));
}

double token_accuracy(int64_t correct, int64_t total) {
  if (total <= 0 || correct < 0 || correct > total) {
    throw std::invalid_argument("token_accuracy: " + std::to_string(correct) + " correct of " +
                                std::to_string(total));
  }
  return static_cast<double>(correct) / static_cast<double>(total);
}

}  // namespace shc::jobs::eval
