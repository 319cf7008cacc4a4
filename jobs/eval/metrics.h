// Text and language-model metrics of `shc evaluate` (SPEC §8): exact match, token F1, corpus BLEU,
// perplexity and token accuracy. Pure functions, no I/O.
//
// Normalisation (exact match, F1, BLEU): leading and trailing whitespace removed and every run of
// whitespace (space, \t, \n, \v, \f, \r) collapsed to one space. Nothing else: comparisons are
// case-sensitive and punctuation counts (unlike SQuAD's official script, which also lower-cases
// and drops punctuation and articles), because the answers scored here are exact strings
// ("True", "(A)", "42") whose case and punctuation are part of the answer.
//
// BLEU is Papineni, Roukos, Ward and Zhu, "BLEU: a Method for Automatic Evaluation of Machine
// Translation", ACL 2002: modified (clipped) n-gram precisions p_1..p_4, each summed over the
// whole corpus before dividing, their geometric mean with uniform weights 1/4, times the brevity
// penalty BP = 1 if c > r, exp(1 - r/c) if c <= r (c: total hypothesis length, r: total
// reference length; BP = 0 when c = 0). One reference per hypothesis; tokens are the
// whitespace-separated words of the normalised text (no punctuation splitting, so "cat." and "cat"
// differ). No smoothing: when some p_n is 0 (including an empty corpus or one whose hypotheses are
// all shorter than n words), BLEU is 0, as in the paper, where the geometric mean of a zero is
// zero.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace shc::jobs::eval {

// The normalisation above.
std::string normalize_answer(const std::string& text);
// The whitespace-separated words of `text` (so also of its normalisation).
std::vector<std::string> whitespace_tokens(const std::string& text);

// normalize_answer(prediction) == normalize_answer(reference); case-sensitive.
bool exact_match(const std::string& prediction, const std::string& reference);

struct F1Score {
  double precision = 0;
  double recall = 0;
  double f1 = 0;
};

// SQuAD-style bag-of-tokens overlap of the whitespace tokens of the normalised strings: common =
// size of the multiset intersection; precision = common / |prediction|, recall = common /
// |reference|, f1 their harmonic mean. Both empty: all 1. Exactly one empty, or nothing in
// common: all 0.
F1Score token_f1(const std::string& prediction, const std::string& reference);

struct BleuScore {
  double bleu = 0;
  double brevity_penalty = 0;
  std::array<double, 4> precisions{};  // p_n = matches[n-1] / totals[n-1] (0 when totals is 0)
  std::array<int64_t, 4> matches{};    // clipped n-gram matches, summed over the corpus
  std::array<int64_t, 4> totals{};     // hypothesis n-grams, summed over the corpus
  int64_t hypothesis_length = 0;       // c
  int64_t reference_length = 0;        // r
};

// Corpus BLEU of hypotheses[i] against references[i]. std::invalid_argument when the two differ
// in size.
BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::string>& references);

// exp(nll_sum / tokens): nll_sum is the summed natural-log negative log-likelihood of `tokens`
// predicted tokens. std::invalid_argument when tokens <= 0.
double perplexity(double nll_sum, int64_t tokens);

// correct / total. std::invalid_argument when total <= 0 or correct is outside [0, total].
double token_accuracy(int64_t correct, int64_t total);

}  // namespace shc::jobs::eval
