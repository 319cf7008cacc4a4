// RoutingAnalyzer: observes a model's hyper-connections and summarises, per layer and sublayer,
// ||H_res||_2 per token, the entropy and top-k selection frequencies of the Cayley mixture, the
// n_eff histogram, H_pre / H_post statistics, the row and column sums of mHC's doubly stochastic
// H_res, and the composite gain of prod H_res over depth (the mHC paper's "Amax": the largest
// absolute row and column sums of the product).
//
// The analyzer is attached to the model only while analyze_batch() runs its forward (an RAII
// scope), so forwards the caller runs itself are never counted. Statistics of analyzers that saw
// different tokens combine exactly (state() / merge_state()): that is how a data-parallel
// analysis adds up its ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "block.h"
#include "transformer.h"

namespace shc {

struct RunningStat {
  double sum = 0, min = 0, max = 0;  // min and max are meaningful once count > 0
  int64_t count = 0;
  void add(const torch::Tensor& values);  // any shape; NaNs propagate into the sum
  void merge(const RunningStat& other);   // as if other's values had been add()ed here
  double mean() const { return count ? sum / double(count) : 0.0; }
};

// Which statistics a residual kind has; the others stay empty (count 0) and are left out of the
// report rather than reported as zeros.
//   residual: none (n = 1, H = 1: there is no routing to observe)
//   hc:       spectral norm, H_pre / H_post, composite gain
//   mhc:      the same plus row / column sums and entries of H_res (doubly stochastic)
//   shc:      the same as hc plus alpha entropy and top-k selection counts, and the n_eff
//             histogram with adaptive rank
struct SublayerRouting {
  int64_t layer = 0;
  Sublayer sublayer = Sublayer::kAttention;
  RunningStat spectral_norm;              // ||H_res||_2 per token
  RunningStat row_sum, col_sum;           // sum_j H_ij and sum_i H_ij per token and row/column
  RunningStat entry;                      // H_ij per token (mhc: >= 0)
  RunningStat alpha_entropy;              // nats per token (shc)
  std::vector<int64_t> selection_counts;  // tokens that kept basis i in their top-k (shc)
  std::vector<int64_t> n_eff_histogram;   // tokens with n_eff = 1..n (adaptive rank)
  RunningStat pre, post;                  // entries of H_pre and H_post
  RunningStat composite_row_gain;         // max_i sum_j |(prod H_res)_ij| per token, up to here
  RunningStat composite_col_gain;         // max_j sum_i |(prod H_res)_ij| per token, up to here
};

// Puts `observer` on every block of `model` for the scope's lifetime and takes it off when the
// scope ends, exception or not. A model has one observer slot: scopes do not nest.
class ScopedRoutingObserver {
 public:
  ScopedRoutingObserver(SHCTransformer model, RoutingObserver* observer);
  ~ScopedRoutingObserver();
  ScopedRoutingObserver(const ScopedRoutingObserver&) = delete;
  ScopedRoutingObserver& operator=(const ScopedRoutingObserver&) = delete;

 private:
  SHCTransformer model_;
};

class RoutingAnalyzer : public RoutingObserver {
 public:
  // Statistics for `model`'s config; observes nothing until analyze_batch().
  explicit RoutingAnalyzer(SHCTransformer model);
  RoutingAnalyzer(const RoutingAnalyzer&) = delete;
  RoutingAnalyzer& operator=(const RoutingAnalyzer&) = delete;

  // Runs the model (eval mode, no grad) on ids (batch, T) with the analyzer attached for that
  // forward only, and accumulates statistics. The model's mode is restored afterwards.
  void analyze_batch(const torch::Tensor& ids);
  void reset();
  int64_t tokens_seen() const { return tokens_; }
  // One entry per sublayer in depth order (2 per layer).
  const std::vector<SublayerRouting>& sublayers() const { return stats_; }

  // Everything accumulated, as numbers (the same length for every analyzer of one config)...
  std::vector<double> state() const;
  // ... and the combination with another analyzer's state: counts and sums add, minima and
  // maxima combine. std::invalid_argument for a state of another length.
  void merge_state(const std::vector<double>& other);

  // The summary as a JSON object: {"model": summary line, "tokens": N, "sublayers": [one flat
  // object per sublayer: "layer", "sublayer" ("attention" | "ffn"), "depth", then
  // "<statistic>_mean" / "_min" / "_max" for every statistic the kind has (see SublayerRouting),
  // "selection_frequency_<i>" (fraction of tokens whose top-k kept basis i), "n_eff_fraction_<m>"
  // and "n_eff_mean", and "composite_gain_max" (the larger of the row and column Amax)]}.
  // Non-finite numbers are null.
  std::string to_json() const;

  void observe(int64_t layer, Sublayer sublayer, const Routing& routing,
               const torch::Tensor& n_eff) override;

 private:
  SHCTransformer model_;
  std::vector<SublayerRouting> stats_;
  torch::Tensor composite_;  // running prod H_res per token of the current batch
  int64_t tokens_ = 0;
};

}  // namespace shc
