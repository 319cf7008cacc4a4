// RoutingAnalyzer (core/routing_analyzer.h): fresh models against their known statistics, the
// composite gain against an explicit product of the observed H_res matrices, what each residual
// kind reports (and leaves out), valid JSON for a diverged model, the exact combination of
// analyzers that saw different tokens, and the attachment that lasts only for an analysis.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/routing_analyzer.h"
#include "core/transformer.h"
#include "tests/test_model_config.h"
#include "tests/test_models.h"

namespace shc {
namespace {

using nlohmann::json;

ModelConfig config_of(ResidualKind kind, bool adaptive_rank = false) {
  auto cfg = test::small_model_config(kind);
  cfg.adaptive_rank = adaptive_rank;
  return cfg;
}

// Every H_res a forward routes, in depth order: (tokens, n, n) fp64 per sublayer.
class RecordingObserver : public RoutingObserver {
 public:
  void observe(int64_t, Sublayer, const Routing& routing, const torch::Tensor&) override {
    const auto n = routing.res.size(-1);
    res.push_back(routing.res.detach().to(torch::kDouble).reshape({-1, n, n}).clone());
  }
  std::vector<torch::Tensor> res;
};

TEST(RoutingAnalyzerFreshModel, ShcSpectralNormsAreOneAndAlphaEntropyIsLnK) {
  // top_k = K: every basis is kept, and at initialisation the mixture logits are near zero, so
  // alpha is near uniform (entropy ln K) and H_res a convex mix of near-identity orthogonal
  // matrices (norm 1 up to the spread of the bases, ~1e-4 at init scale 0.01).
  auto cfg = config_of(ResidualKind::kSHC);
  cfg.top_k = cfg.k_mixture;
  torch::manual_seed(50);
  SHCTransformer m(cfg);
  RoutingAnalyzer analyzer(m);
  analyzer.analyze_batch(torch::randint(61, {3, 16}));
  const double ln_k = std::log(double(cfg.k_mixture));
  for (const auto& s : analyzer.sublayers()) {
    EXPECT_EQ(s.spectral_norm.count, 48);
    EXPECT_LE(s.spectral_norm.max, 1.0 + 1e-9);
    EXPECT_GE(s.spectral_norm.min, 1.0 - 1e-3);
    EXPECT_NEAR(s.alpha_entropy.mean(), ln_k, 1e-4);
    EXPECT_GE(s.alpha_entropy.min, ln_k - 1e-3);
    EXPECT_LE(s.alpha_entropy.max, ln_k + 1e-6);         // alpha is fp32
    for (auto c : s.selection_counts) EXPECT_EQ(c, 48);  // every token kept every basis
  }
}

TEST(RoutingAnalyzerFreshModel, MhcIsDoublyStochastic) {
  // Sinkhorn-Knopp ends with a column normalisation: columns sum to 1 to rounding, rows to the
  // convergence of 20 iterations (1e-4 from the strongly diagonal start, 1e-3 once the dynamic
  // part has moved the logits, as in routing_math_test's Sinkhorn test); entries are positive. A
  // doubly stochastic matrix has spectral norm 1, and so has the product over depth (itself
  // doubly stochastic): composite gain 1.
  for (bool trained_like : {false, true}) {
    auto cfg = config_of(ResidualKind::kMHC);
    torch::manual_seed(51);
    SHCTransformer m = trained_like ? test::perturbed_model(cfg, 52) : SHCTransformer(cfg);
    RoutingAnalyzer analyzer(m);
    analyzer.analyze_batch(torch::randint(61, {2, 16}));
    for (const auto& s : analyzer.sublayers()) {
      SCOPED_TRACE((trained_like ? "perturbed, depth " : "fresh, depth ") +
                   std::to_string(2 * s.layer + int(s.sublayer)));
      EXPECT_EQ(s.row_sum.count, 32 * cfg.n_streams);
      EXPECT_NEAR(s.col_sum.min, 1.0, 1e-6);
      EXPECT_NEAR(s.col_sum.max, 1.0, 1e-6);
      const double rows = trained_like ? 1e-3 : 1e-4;
      EXPECT_NEAR(s.row_sum.min, 1.0, rows);
      EXPECT_NEAR(s.row_sum.max, 1.0, rows);
      EXPECT_GE(s.entry.min, 0.0);
      EXPECT_NEAR(s.entry.mean(), 1.0 / double(cfg.n_streams), 1e-6);
      EXPECT_NEAR(s.spectral_norm.min, 1.0, rows);
      EXPECT_NEAR(s.spectral_norm.max, 1.0, rows);
      EXPECT_NEAR(s.composite_row_gain.max, 1.0, 1e-3);
      EXPECT_NEAR(s.composite_col_gain.max, 1.0, 1e-3);
    }
  }
}

TEST(RoutingAnalyzer, CompositeGainEqualsAnExplicitProductOfTheObservedMatrices) {
  for (auto [kind, adaptive] :
       std::vector<std::pair<ResidualKind, bool>>{{ResidualKind::kHC, false},
                                                  {ResidualKind::kMHC, false},
                                                  {ResidualKind::kSHC, false},
                                                  {ResidualKind::kSHC, true}}) {
    SCOPED_TRACE(to_string(kind) + (adaptive ? " with adaptive rank" : ""));
    auto m = test::perturbed_model(config_of(kind, adaptive), 53);
    m->eval();
    const auto ids = torch::randint(61, {2, 9});
    RecordingObserver recorded;
    {
      torch::NoGradGuard no_grad;
      ScopedRoutingObserver attached(m, &recorded);
      m->forward(ids);
    }
    RoutingAnalyzer analyzer(m);
    analyzer.analyze_batch(ids);
    ASSERT_EQ(recorded.res.size(), analyzer.sublayers().size());

    const int64_t tokens = recorded.res[0].size(0), n = recorded.res[0].size(1);
    // P_t = H_d[t] ... H_0[t], by hand, token by token.
    std::vector<std::vector<double>> product(tokens, std::vector<double>(n * n, 0.0));
    for (auto& p : product) {
      for (int64_t i = 0; i < n; ++i) p[i * n + i] = 1.0;
    }
    for (size_t d = 0; d < recorded.res.size(); ++d) {
      auto h = recorded.res[d].accessor<double, 3>();
      double row_max = 0, col_max = 0, row_sum_over_tokens = 0;
      for (int64_t t = 0; t < tokens; ++t) {
        std::vector<double> next(n * n, 0.0);
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            for (int64_t k = 0; k < n; ++k) next[i * n + j] += h[t][i][k] * product[t][k * n + j];
          }
        }
        product[t] = next;
        double token_row = 0, token_col = 0;
        for (int64_t i = 0; i < n; ++i) {
          double row = 0, col = 0;
          for (int64_t j = 0; j < n; ++j) {
            row += std::abs(next[i * n + j]);
            col += std::abs(next[j * n + i]);
          }
          token_row = std::max(token_row, row);
          token_col = std::max(token_col, col);
        }
        row_max = std::max(row_max, token_row);
        col_max = std::max(col_max, token_col);
        row_sum_over_tokens += token_row;
      }
      const auto& s = analyzer.sublayers()[d];
      EXPECT_NEAR(s.composite_row_gain.max, row_max, 1e-12 * row_max) << "depth " << d;
      EXPECT_NEAR(s.composite_col_gain.max, col_max, 1e-12 * col_max) << "depth " << d;
      EXPECT_NEAR(s.composite_row_gain.mean(), row_sum_over_tokens / double(tokens),
                  1e-12 * row_max)
          << "depth " << d;
    }
  }
}

// The statistic names of the first sublayer record of `analyzer`'s JSON (parsed: it must be valid).
std::set<std::string> reported_keys(const RoutingAnalyzer& analyzer) {
  const json j = json::parse(analyzer.to_json());
  std::set<std::string> keys;
  for (const auto& item : j.at("sublayers").at(0).items()) keys.insert(item.key());
  return keys;
}

TEST(RoutingAnalyzer, ReportsWhatTheResidualKindHasAndLeavesTheRestOut) {
  const std::set<std::string> position{"layer", "sublayer", "depth"};
  auto stat = [](const std::string& name) {
    return std::set<std::string>{name + "_mean", name + "_min", name + "_max"};
  };
  auto with = [](std::set<std::string> a, const std::set<std::string>& b) {
    a.insert(b.begin(), b.end());
    return a;
  };
  std::set<std::string> routed = position;
  for (const char* name :
       {"spectral_norm", "pre", "post", "composite_row_gain", "composite_col_gain"})
    routed = with(routed, stat(name));
  routed.insert("composite_gain_max");
  const auto shc =
      with(with(routed, stat("alpha_entropy")),
           {"selection_frequency_0", "selection_frequency_1", "selection_frequency_2"});
  const std::vector<std::pair<ModelConfig, std::set<std::string>>> cases{
      {config_of(ResidualKind::kResidual), position},
      {config_of(ResidualKind::kHC), routed},
      {config_of(ResidualKind::kMHC),
       with(with(with(routed, stat("row_sum")), stat("col_sum")), stat("entry"))},
      {config_of(ResidualKind::kSHC), shc},
      {config_of(ResidualKind::kSHC, true),
       with(shc, {"n_eff_fraction_1", "n_eff_fraction_2", "n_eff_fraction_3", "n_eff_fraction_4",
                  "n_eff_mean"})},
  };
  for (const auto& [cfg, expected] : cases) {
    SCOPED_TRACE(cfg.summary());
    auto m = test::perturbed_model(cfg, 54);
    RoutingAnalyzer analyzer(m);
    analyzer.analyze_batch(torch::randint(61, {2, 8}));
    EXPECT_EQ(reported_keys(analyzer), expected);
    const json j = json::parse(analyzer.to_json());
    EXPECT_EQ(j.at("tokens"), 16);
    EXPECT_EQ(j.at("sublayers").size(), size_t(2 * cfg.n_layers));
  }
}

TEST(RoutingAnalyzer, ADivergedModelGivesValidJsonWithNulls) {
  auto m = test::perturbed_model(config_of(ResidualKind::kSHC), 55);
  {
    torch::NoGradGuard no_grad;
    for (auto& item : m->named_parameters()) {
      if (item.key().find("mixture.logits.weight") != std::string::npos)
        item.value().fill_(std::numeric_limits<double>::quiet_NaN());
    }
  }
  RoutingAnalyzer analyzer(m);
  analyzer.analyze_batch(torch::randint(61, {1, 6}));
  const json j = json::parse(analyzer.to_json());  // NaN is not JSON: it must come out as null
  const auto& first = j.at("sublayers").at(0);
  EXPECT_TRUE(first.at("spectral_norm_mean").is_null());
  EXPECT_TRUE(first.at("alpha_entropy_mean").is_null());
}

TEST(RoutingAnalyzer, MergedStatesOfTwoHalvesEqualOneAnalysisOfTheWhole) {
  auto m = test::perturbed_model(config_of(ResidualKind::kSHC, true), 56);
  const auto ids = torch::randint(61, {4, 12});
  RoutingAnalyzer whole(m), first(m), second(m);
  whole.analyze_batch(ids);
  first.analyze_batch(ids.narrow(0, 0, 1));
  second.analyze_batch(ids.narrow(0, 1, 3));
  first.merge_state(second.state());
  const auto expected = whole.state(), merged = first.state();
  ASSERT_EQ(merged.size(), expected.size());
  // Per-token values are fp32 model outputs: a batch of 1 and one of 4 may round differently.
  for (size_t i = 0; i < merged.size(); ++i)
    EXPECT_NEAR(merged[i], expected[i], 1e-5 * std::max(1.0, std::abs(expected[i]))) << i;
  EXPECT_EQ(first.tokens_seen(), 48);
  for (size_t i = 0; i < whole.sublayers().size(); ++i) {
    EXPECT_EQ(first.sublayers()[i].n_eff_histogram, whole.sublayers()[i].n_eff_histogram);
    EXPECT_EQ(first.sublayers()[i].selection_counts, whole.sublayers()[i].selection_counts);
  }
  RoutingAnalyzer other_config(SHCTransformer(config_of(ResidualKind::kHC)));
  EXPECT_THROW(first.merge_state(other_config.state()), std::invalid_argument);
}

TEST(RoutingAnalyzer, ObservesOnlyTheForwardsOfItsOwnAnalysis) {
  auto m = test::perturbed_model(config_of(ResidualKind::kSHC, true), 57);
  const auto ids = torch::randint(61, {2, 8});
  RoutingAnalyzer analyzer(m);
  const auto nothing = analyzer.state();
  torch::NoGradGuard no_grad;
  m->forward(ids);  // before any analysis
  EXPECT_EQ(analyzer.state(), nothing);

  analyzer.analyze_batch(ids);
  const auto analysed = analyzer.state();
  EXPECT_NE(analysed, nothing);
  m->forward(ids);  // after it
  EXPECT_EQ(analyzer.state(), analysed);

  // An analysis that fails (a token id outside the vocabulary) still detaches and restores the
  // model's training mode.
  m->train();
  EXPECT_THROW(analyzer.analyze_batch(torch::full({1, 4}, 1000, torch::kLong)), c10::Error);
  EXPECT_TRUE(m->is_training());
  m->eval();
  m->forward(ids);
  EXPECT_EQ(analyzer.state(), analysed);

  // The scope itself: a counting observer sees exactly the forward inside it.
  RecordingObserver recorded;
  {
    ScopedRoutingObserver attached(m, &recorded);
    m->forward(ids);
  }
  m->forward(ids);
  EXPECT_EQ(recorded.res.size(), size_t(2 * m->config().n_layers));
}

}  // namespace
}  // namespace shc
