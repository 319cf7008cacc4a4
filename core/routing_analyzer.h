// RoutingAnalyzer: observes a model's hyper-connections and summarises, per layer and sublayer,
// ||H_res||_2 per token, the entropy and top-k selection frequencies of the Cayley mixture, the
// n_eff histogram, H_pre / H_post statistics, and the composite gain of prod H_res over depth
// (the mHC paper's "Amax": the largest absolute row and column sums of the product).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "block.h"
#include "transformer.h"

namespace shc {

struct RunningStat {
  double sum = 0, min = 0, max = 0;
  int64_t count = 0;
  void add(const torch::Tensor& values);  // any shape; NaNs propagate into the sum
  double mean() const { return count ? sum / double(count) : 0.0; }
};

struct SublayerRouting {
  int64_t layer = 0;
  Sublayer sublayer = Sublayer::kAttention;
  RunningStat spectral_norm;              // ||H_res||_2 per token
  RunningStat alpha_entropy;              // nats, shc only
  std::vector<int64_t> selection_counts;  // tokens that kept basis i in their top-k (shc)
  std::vector<int64_t> n_eff_histogram;   // tokens with n_eff = 1..n (adaptive rank)
  RunningStat pre, post;                  // entries of H_pre and H_post
  RunningStat composite_row_gain;         // max_i sum_j |(prod H_res)_ij| per token, up to here
  RunningStat composite_col_gain;         // max_j sum_i |(prod H_res)_ij| per token, up to here
};

class RoutingAnalyzer : public RoutingObserver {
 public:
  // Attaches to `model` for the analyzer's lifetime.
  explicit RoutingAnalyzer(SHCTransformer model);
  ~RoutingAnalyzer() override;
  RoutingAnalyzer(const RoutingAnalyzer&) = delete;
  RoutingAnalyzer& operator=(const RoutingAnalyzer&) = delete;

  // Runs the model (eval mode, no grad) on ids (batch, T) and accumulates statistics.
  void analyze_batch(const torch::Tensor& ids);
  void reset();
  int64_t tokens_seen() const { return tokens_; }
  // One entry per sublayer in depth order (2 per layer).
  const std::vector<SublayerRouting>& sublayers() const { return stats_; }
  // The summary as a JSON object.
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
