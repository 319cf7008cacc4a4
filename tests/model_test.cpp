// Whole-model properties for every residual kind (SPEC §11): causality, KV-cached decoding equal to
// the full forward pass, gradients reaching every parameter, the loss shift, generation options,
// and the routing statistics at initialisation.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>

#include "core/routing_analyzer.h"
#include "core/transformer.h"
#include "tests/test_model_config.h"
#include "tests/test_models.h"

namespace shc {
namespace {

struct Variant {
  std::string name;
  ModelConfig cfg;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  v.push_back({"residual", test::small_model_config(ResidualKind::kResidual)});
  v.push_back({"hc", test::small_model_config(ResidualKind::kHC)});
  v.push_back({"mhc", test::small_model_config(ResidualKind::kMHC)});
  v.push_back({"shc", test::small_model_config(ResidualKind::kSHC)});
  auto adaptive = test::small_model_config(ResidualKind::kSHC);
  adaptive.adaptive_rank = true;
  v.push_back({"shc_adaptive_rank", adaptive});
  auto compressed = test::small_model_config(ResidualKind::kSHC);
  compressed.stream_rank = 2;
  compressed.stream_offsets = true;
  compressed.n_kv_heads = 2;  // grouped-query attention
  compressed.tie_embeddings = false;
  v.push_back({"shc_rank2_gqa_untied", compressed});
  v.push_back({"history", test::small_model_config(ResidualKind::kHistory)});
  auto history = test::small_model_config(ResidualKind::kHistory);
  history.history_floor = 0.2;
  history.history_tau = 0.5;
  history.history_detach = true;
  history.stream_offsets = true;
  v.push_back({"history_floor_gumbel_detach", history});
  return v;
}

using test::perturbed_model;

void PrintTo(const Variant& v, std::ostream* os) {
  *os << v.name;
}

class ModelKinds : public ::testing::TestWithParam<Variant> {};

TEST_P(ModelKinds, CausalPerToken) {
  auto m = perturbed_model(GetParam().cfg, 10);
  m->eval();
  torch::NoGradGuard g;
  auto ids = torch::randint(61, {2, 20});
  auto base = m->forward(ids);
  for (int64_t t : {0, 7, 18}) {
    auto changed = ids.clone();
    changed.narrow(1, t + 1, 20 - t - 1).random_(61);
    auto out = m->forward(changed);
    const double diff =
        (out.narrow(1, 0, t + 1) - base.narrow(1, 0, t + 1)).abs().max().item<double>();
    EXPECT_LE(diff, 1e-6) << "logits at positions <= " << t << " changed";
    // The change must be visible later, or the test proves nothing.
    EXPECT_GT(
        (out.narrow(1, t + 1, 19 - t) - base.narrow(1, t + 1, 19 - t)).abs().max().item<double>(),
        1e-4);
  }
}

TEST_P(ModelKinds, CachedDecodingEqualsFullForward) {
  auto m = perturbed_model(GetParam().cfg, 11);
  m->eval();
  torch::NoGradGuard g;
  auto ids = torch::randint(61, {3, 16});
  auto full = m->forward(ids);
  KVCache cache(m->config(), 3, 16, torch::kFloat);
  // Prefill 5, then a chunk of 3 (offset mask path), then one token at a time.
  std::vector<torch::Tensor> pieces{m->forward_cached(ids.narrow(1, 0, 5), cache),
                                    m->forward_cached(ids.narrow(1, 5, 3), cache)};
  for (int64_t t = 8; t < 16; ++t) pieces.push_back(m->forward_cached(ids.narrow(1, t, 1), cache));
  auto cached = torch::cat(pieces, 1);
  EXPECT_EQ(cache.length(), 16);
  EXPECT_LE((cached - full).abs().max().item<double>(), 1e-4);
}

TEST_P(ModelKinds, GreedyGenerationFollowsFullForwardArgmax) {
  auto m = perturbed_model(GetParam().cfg, 12);
  GenerationOptions o;
  o.max_new_tokens = 8;
  o.temperature = 0.0;  // greedy, must not divide by zero
  auto out = m->generate(torch::randint(61, {2, 4}), o);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 12}));
  torch::NoGradGuard g;
  m->eval();
  auto logits = m->forward(out);
  auto expected = logits.narrow(1, 3, 8).argmax(-1);
  EXPECT_TRUE(torch::equal(out.narrow(1, 4, 8), expected));
}

TEST_P(ModelKinds, EveryParameterGetsAFiniteGradient) {
  auto m = perturbed_model(GetParam().cfg, 13);
  m->train();
  auto ids = torch::randint(61, {2, 12});
  m->forward(ids, ids).backward();
  const auto& cfg = GetParam().cfg;
  for (const auto& item : m->named_parameters()) {
    const auto& grad = item.value().grad();
    ASSERT_TRUE(grad.defined()) << item.key() << " has no gradient";
    EXPECT_TRUE(torch::isfinite(grad).all().item<bool>()) << item.key();
    // history's first window holds n copies of the embedding (without stream offsets): every
    // mixture on the simplex gives the same state there, so its weights have gradient 0.
    if (cfg.residual == ResidualKind::kHistory && !cfg.stream_offsets &&
        item.key() == "blocks.0.attn_hc.router.window_logits") {
      EXPECT_EQ(grad.abs().sum().item<double>(), 0.0);
      continue;
    }
    EXPECT_GT(grad.abs().sum().item<double>(), 0.0) << item.key() << " gradient is zero";
  }
}

TEST_P(ModelKinds, LossIsShiftedMeanCrossEntropyWithIgnoreIndex) {
  auto m = perturbed_model(GetParam().cfg, 14);
  m->eval();  // deterministic rank selection, so both forward passes see the same model
  torch::NoGradGuard g;
  auto ids = torch::randint(61, {2, 10});
  auto labels = ids.clone();
  labels[0][4] = kIgnoreIndex;
  auto logp = torch::log_softmax(m->forward(ids), -1);
  double sum = 0;
  int count = 0;
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t t = 0; t + 1 < 10; ++t) {
      const int64_t target = labels[b][t + 1].item<int64_t>();
      if (target == kIgnoreIndex) continue;
      sum -= logp[b][t][target].item<double>();
      ++count;
    }
  }
  EXPECT_NEAR(m->forward(ids, labels).item<double>(), sum / count, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Kinds, ModelKinds, ::testing::ValuesIn(variants()),
                         [](const auto& info) { return info.param.name; });

TEST(Generation, RowsStopIndependentlyAtEos) {
  auto m = perturbed_model(test::small_model_config(ResidualKind::kSHC), 20);
  auto prompt = torch::randint(61, {2, 3});
  GenerationOptions o;
  o.max_new_tokens = 10;
  o.do_sample = false;
  auto free_run = m->generate(prompt, o);
  // Make row 0's first generated token the EOS: row 0 stops at once, row 1 must be unaffected
  // until it emits that token itself.
  o.eos_id = free_run[0][3].item<int64_t>();
  auto out = m->generate(prompt, o);
  EXPECT_TRUE((out[0].narrow(0, 3, out.size(1) - 3) == o.eos_id).all().item<bool>());
  for (int64_t t = 3; t < out.size(1); ++t) {
    EXPECT_EQ(out[1][t].item<int64_t>(), free_run[1][t].item<int64_t>());
    if (free_run[1][t].item<int64_t>() == o.eos_id) break;
  }
}

TEST(Generation, SamplingIsSeededAndRespectsTopK) {
  auto m = perturbed_model(test::small_model_config(ResidualKind::kSHC), 21);
  GenerationOptions o;
  o.max_new_tokens = 6;
  o.temperature = 0.8;
  o.top_k = 1;  // top-1 sampling is greedy
  o.seed = 7;
  auto prompt = torch::randint(61, {2, 3});
  GenerationOptions greedy = o;
  greedy.do_sample = false;
  EXPECT_TRUE(torch::equal(m->generate(prompt, o), m->generate(prompt, greedy)));
  o.top_k = 0;
  o.top_p = 0.9;
  EXPECT_TRUE(torch::equal(m->generate(prompt, o), m->generate(prompt, o)));
}

// Temperature 0 is argmax of the full (uncached) forward at every step, and on_token streams
// exactly the tokens appended.
TEST(Generation, GreedyEqualsArgmaxOfFullForwards) {
  auto m = perturbed_model(test::small_model_config(ResidualKind::kSHC), 22);
  m->eval();
  auto prompt = torch::randint(61, {1, 4});
  GenerationOptions o;
  o.max_new_tokens = 8;
  o.temperature = 0;
  std::vector<int64_t> streamed;
  o.on_token = [&](const torch::Tensor& next) { streamed.push_back(next[0].item<int64_t>()); };
  const auto out = m->generate(prompt, o);
  ASSERT_EQ(out.size(1), 12);
  torch::NoGradGuard no_grad;
  for (int64_t t = 4; t < 12; ++t) {
    const auto logits = m->forward(out.narrow(1, 0, t));
    EXPECT_EQ(logits[0][t - 1].argmax().item<int64_t>(), out[0][t].item<int64_t>()) << t;
    EXPECT_EQ(streamed[t - 4], out[0][t].item<int64_t>());
  }
}

// top-k and top-p keep exactly the allowed tokens, and draws follow the renormalised
// probabilities (4000 draws, each from its own seed; every frequency within 5 standard errors).
TEST(Sampling, TopKAndTopPDrawOnlyAllowedTokensWithTheirProbabilities) {
  const std::vector<double> p = {0.3, 0.25, 0.15, 0.1, 0.08, 0.06, 0.04, 0.02};
  const auto logits = torch::log(torch::tensor(p, torch::kDouble)).to(torch::kFloat).unsqueeze(0);
  auto check = [&](GenerationOptions o, const std::vector<int64_t>& allowed) {
    double mass = 0;
    for (auto i : allowed) mass += p[i];
    std::vector<int64_t> counts(p.size(), 0);
    const int draws = 4000;
    for (int seed = 0; seed < draws; ++seed) {
      std::optional<at::Generator> gen = at::detail::createCPUGenerator(seed);
      counts[sample_next_token(logits, o, gen)[0].item<int64_t>()]++;
    }
    for (size_t i = 0; i < p.size(); ++i) {
      const bool in = std::find(allowed.begin(), allowed.end(), int64_t(i)) != allowed.end();
      if (!in) {
        EXPECT_EQ(counts[i], 0) << "token " << i << " is outside the allowed set";
        continue;
      }
      const double q = p[i] / mass, expected = q * draws;
      EXPECT_NEAR(counts[i], expected, 5 * std::sqrt(draws * q * (1 - q))) << "token " << i;
    }
  };
  GenerationOptions top_k;
  top_k.top_k = 3;
  check(top_k, {0, 1, 2});
  GenerationOptions top_p;
  top_p.top_p = 0.5;  // mass before token 2 is 0.55 >= 0.5: tokens 0 and 1 stay
  check(top_p, {0, 1});
  GenerationOptions both;
  both.top_k = 4;
  // top_p applies to the top-k distribution: renormalised over 0..3, the mass before token 3 is
  // 0.875 >= 0.75 (top_p alone would keep it: 0.70 before it).
  both.top_p = 0.75;
  check(both, {0, 1, 2});
  GenerationOptions all;
  check(all, {0, 1, 2, 3, 4, 5, 6, 7});
}

TEST(Generation, RejectsPromptsBeyondMaxSeqLen) {
  SHCTransformer m(test::small_model_config(ResidualKind::kSHC));
  GenerationOptions o;
  o.max_new_tokens = 30;
  try {
    m->generate(torch::zeros({1, 5}, torch::kLong), o);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("exceeds max_seq_len (32)"),
              std::string::npos)
        << e.what_without_backtrace();
  }
}

// The message of the c10::Error that `fn` throws ("" if none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

TEST(SequenceLength, ForwardRejectsSequencesBeyondMaxSeqLenOnEveryPath) {
  SHCTransformer m(test::small_model_config(ResidualKind::kSHC));  // max_seq_len 32
  const std::string expected = "SHCTransformer: sequence length 33 exceeds max_seq_len (32)";
  auto ids = torch::zeros({2, 33}, torch::kLong);
  EXPECT_NE(error_of([&] { m->forward(ids); }).find(expected), std::string::npos);
  EXPECT_NE(error_of([&] { m->forward(ids, ids); }).find(expected), std::string::npos);
  EXPECT_NE(error_of([&] { m->run_unit(0, ids); }).find(expected), std::string::npos);
  // The KV-cached path counts the positions already cached.
  KVCache cache(m->config(), 2, 64, torch::TensorOptions());
  m->forward_cached(torch::zeros({2, 30}, torch::kLong), cache);
  EXPECT_NE(error_of([&] {
              m->forward_cached(torch::zeros({2, 3}, torch::kLong), cache);
            }).find(expected),
            std::string::npos);
  EXPECT_EQ(error_of([&] { m->forward(torch::zeros({2, 32}, torch::kLong)); }), "");
}

TEST(SequenceLength, LossOverOneTokenIsAnErrorNotNaN) {
  SHCTransformer m(test::small_model_config(ResidualKind::kResidual));
  auto ids = torch::zeros({2, 1}, torch::kLong);
  const std::string expected =
      "next_token_loss: a sequence of length 1 has no next token to predict (the loss needs T >= "
      "2 tokens per row)";
  EXPECT_NE(error_of([&] { m->forward(ids, ids); }).find(expected), std::string::npos);
  EXPECT_NE(error_of([&] {
              next_token_loss(torch::zeros({2, 1, 5}), ids);
            }).find(expected),
            std::string::npos);
  EXPECT_TRUE(std::isfinite(
      m->forward(torch::zeros({2, 2}, torch::kLong), torch::zeros({2, 2}, torch::kLong))
          .item<double>()));
}

TEST(Buffers, ModelCastToFp64KeepsIndexBuffersAndMatchesFp32) {
  torch::manual_seed(9);
  auto cfg = test::small_model_config(ResidualKind::kSHC);
  cfg.stream_rank = 2;
  SHCTransformer m(cfg);
  int64_t index_buffers = 0;
  for (const auto& b : m->named_buffers()) {
    if (b.key().find("upper_index") != std::string::npos) ++index_buffers;
  }
  // Two Cayley mixtures per block, the stream reducer and the stream codec.
  EXPECT_EQ(index_buffers, 2 * cfg.n_layers + 2);
  auto ids = torch::randint(cfg.vocab_size, {2, 9});
  auto fp32 = m->forward(ids);
  m->to(torch::kDouble);
  for (const auto& b : m->named_buffers()) {
    EXPECT_EQ(b.value().scalar_type(),
              b.key().find("upper_index") != std::string::npos ? torch::kLong : torch::kDouble)
        << b.key();
  }
  auto fp64 = m->forward(ids);
  EXPECT_EQ(fp64.scalar_type(), torch::kDouble);
  EXPECT_LT((fp64 - fp32.to(torch::kDouble)).abs().max().item<double>(), 1e-4);
}

// Records every stage boundary a model reports.
struct RecordingStageObserver : StageObserver {
  struct Event {
    int64_t layer;
    BlockStage from, to;
    bool backward;
  };
  std::vector<Event> events;
  void on_stage_boundary(int64_t layer, BlockStage from, BlockStage to, bool backward,
                         const torch::Tensor&) override {
    events.push_back({layer, from, to, backward});
  }
};

TEST_P(ModelKinds, StageBoundariesComeInOrderForwardAndReversedInBackwardWithoutChangingResults) {
  const auto& cfg = GetParam().cfg;
  torch::manual_seed(10);
  SHCTransformer m(cfg);
  auto ids = torch::randint(cfg.vocab_size, {2, 7});
  torch::manual_seed(11);  // the same Gumbel noise (adaptive rank) in both runs
  auto loss = m->forward(ids, ids);
  loss.backward();
  std::vector<torch::Tensor> grads;
  for (const auto& p : m->parameters()) grads.push_back(p.grad().clone());
  m->zero_grad();

  RecordingStageObserver observer;
  for (auto b : m->block_list()) b->set_stage_observer(&observer);
  torch::manual_seed(11);
  auto observed = m->forward(ids, ids);
  using S = BlockStage;
  const std::vector<std::pair<S, S>> block{
      {S::kOutside, S::kRouting},     {S::kRouting, S::kAttention},   {S::kAttention, S::kRouting},
      {S::kRouting, S::kFeedForward}, {S::kFeedForward, S::kRouting}, {S::kRouting, S::kOutside}};
  ASSERT_EQ(observer.events.size(), block.size() * cfg.n_layers);
  for (size_t i = 0; i < observer.events.size(); ++i) {
    const auto& e = observer.events[i];
    EXPECT_EQ(e.layer, int64_t(i / block.size()));
    EXPECT_EQ(e.from, block[i % block.size()].first) << i;
    EXPECT_EQ(e.to, block[i % block.size()].second) << i;
    EXPECT_FALSE(e.backward);
  }
  observer.events.clear();
  observed.backward();
  ASSERT_EQ(observer.events.size(), block.size() * cfg.n_layers);
  for (size_t i = 0; i < observer.events.size(); ++i) {
    const size_t j = observer.events.size() - 1 - i;  // the forward event it mirrors
    const auto& e = observer.events[i];
    EXPECT_EQ(e.layer, int64_t(j / block.size())) << i;
    EXPECT_EQ(e.from, block[j % block.size()].first) << i;
    EXPECT_EQ(e.to, block[j % block.size()].second) << i;
    EXPECT_TRUE(e.backward);
  }
  EXPECT_EQ(observed.item<double>(), loss.item<double>());
  auto params = m->parameters();
  for (size_t k = 0; k < params.size(); ++k) {
    EXPECT_TRUE(torch::equal(params[k].grad(), grads[k])) << k;
  }
  for (auto b : m->block_list()) b->set_stage_observer(nullptr);
}

TEST(RoutingAtInit, ResidualMapsStartNearIdentityAndStayBounded) {
  // Max abs row / column sum of the composite prod H_res over depth ("Amax" of mHC):
  //  hc  - exactly I at init (zero dynamic weights, static part I);
  //  mhc - doubly stochastic, so every row and column sums to 1;
  //  shc - orthogonal mixtures near I; the l-inf norm of an orthogonal matrix may exceed 1
  //        (up to sqrt(n)), only its spectral norm is bounded.
  const std::vector<std::pair<ResidualKind, double>> cases{
      {ResidualKind::kHC, 1e-6}, {ResidualKind::kMHC, 2e-3}, {ResidualKind::kSHC, 0.15}};
  for (auto [kind, gain_tolerance] : cases) {
    torch::manual_seed(30);
    SHCTransformer m(test::small_model_config(kind));
    RoutingAnalyzer analyzer(m);
    analyzer.analyze_batch(torch::randint(61, {2, 16}));
    EXPECT_EQ(analyzer.tokens_seen(), 32);
    for (const auto& s : analyzer.sublayers()) {
      EXPECT_EQ(s.spectral_norm.count, 32);
      EXPECT_NEAR(s.spectral_norm.max, 1.0, 1e-2) << to_string(kind);
      EXPECT_NEAR(s.composite_row_gain.max, 1.0, gain_tolerance) << to_string(kind);
      EXPECT_NEAR(s.composite_col_gain.max, 1.0, gain_tolerance) << to_string(kind);
    }
  }
}

TEST(RoutingAnalyzer, ReportsMixtureAndRankStatistics) {
  auto cfg = test::small_model_config(ResidualKind::kSHC);
  cfg.adaptive_rank = true;
  auto m = perturbed_model(cfg, 31);
  RoutingAnalyzer analyzer(m);
  analyzer.analyze_batch(torch::randint(61, {3, 10}));
  analyzer.analyze_batch(torch::randint(61, {1, 7}));  // any batch size
  for (const auto& s : analyzer.sublayers()) {
    EXPECT_LE(s.spectral_norm.max, 1.0 + 1e-5);
    int64_t kept = 0, tokens = 0;
    for (auto c : s.selection_counts) kept += c;
    for (auto c : s.n_eff_histogram) tokens += c;
    EXPECT_EQ(kept, 37 * cfg.top_k);
    EXPECT_EQ(tokens, 37);
    EXPECT_GE(s.alpha_entropy.min, 0.0);
    EXPECT_LE(s.alpha_entropy.max, std::log(double(cfg.top_k)) + 1e-6);
  }
}

TEST(AdaptiveRankModel, EveryNEffWorksMixedInOneBatchAndTrainsTheSelector) {
  auto cfg = test::small_model_config(ResidualKind::kSHC);
  cfg.adaptive_rank = true;
  auto m = perturbed_model(cfg, 40);
  // A strongly input-dependent selector with no preferred rank spreads n_eff over 1..4 within a
  // batch; the histogram proves every value occurred.
  {
    torch::NoGradGuard g;
    for (const auto& b : m->block_list()) {
      b->rank_selector->hidden->weight.normal_(0, 3.0);
      b->rank_selector->out->weight.normal_(0, 3.0);
      b->rank_selector->layer_bias.zero_();
    }
  }
  RoutingAnalyzer analyzer(m);
  analyzer.analyze_batch(torch::randint(61, {4, 32}));
  std::vector<int64_t> hist(4, 0);
  for (const auto& s : analyzer.sublayers()) {
    for (size_t i = 0; i < 4; ++i) hist[i] += s.n_eff_histogram[i];
    EXPECT_LE(s.spectral_norm.max, 1.0 + 1e-5);  // P H P + (I - P) stays bounded
  }
  for (size_t i = 0; i < 4; ++i) EXPECT_GT(hist[i], 0) << "n_eff = " << i + 1 << " never chosen";

  m->train();
  auto ids = torch::randint(61, {4, 32});
  auto loss = m->forward(ids, ids);
  ASSERT_TRUE(std::isfinite(loss.item<double>()));
  loss.backward();
  for (const auto& b : m->block_list()) {
    for (const auto& p : b->rank_selector->parameters()) {
      EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0);
    }
  }
}

// The trainer keys the rank selector's Gumbel noise by global sequence index (gumbel_noise.h):
// the same sequences give the same training-mode logits whether they run as one batch or split
// over micro-batches (or ranks), and other sequence indices draw other noise.
TEST(AdaptiveRankModel, KeyedGumbelNoiseIgnoresHowTheBatchIsSplit) {
  auto cfg = test::small_model_config(ResidualKind::kSHC);
  cfg.adaptive_rank = true;
  auto m = perturbed_model(cfg, 41);
  {
    // A selector without a strong preference, so that the noise decides n_eff.
    torch::NoGradGuard g;
    for (const auto& b : m->block_list()) b->rank_selector->layer_bias.zero_();
  }
  m->train();
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(61, {4, 16});
  auto keyed = [&](const torch::Tensor& rows, int64_t first_sequence, int64_t step) {
    m->set_gumbel_noise(GumbelNoiseKey{
        99, step, torch::arange(first_sequence, first_sequence + rows.size(0), torch::kLong)});
    return m->forward(rows);
  };
  auto whole = keyed(ids, 100, 1);
  auto split = torch::cat({keyed(ids.narrow(0, 0, 1), 100, 1), keyed(ids.narrow(0, 1, 3), 101, 1)});
  EXPECT_TRUE(torch::allclose(whole, split, 1e-5, 1e-6))
      << "max difference " << (whole - split).abs().max().item<double>();
  EXPECT_TRUE(torch::equal(whole, keyed(ids, 100, 1)));  // a pure function of the key
  EXPECT_FALSE(torch::allclose(whole, keyed(ids, 200, 1), 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(whole, keyed(ids, 100, 2), 1e-5, 1e-6));
  m->set_gumbel_noise(std::nullopt);
  EXPECT_FALSE(torch::allclose(whole, m->forward(ids), 1e-5, 1e-6));  // the generator again
}

// A key must name one sequence per batch row; anything else is an error naming the caller, not
// noise drawn for the wrong rows.
TEST(AdaptiveRankModel, KeyedNoiseForTheWrongNumberOfRowsIsAnError) {
  auto cfg = test::small_model_config(ResidualKind::kSHC);
  cfg.adaptive_rank = true;
  auto m = perturbed_model(cfg, 42);
  m->train();
  torch::NoGradGuard no_grad;
  m->set_gumbel_noise(GumbelNoiseKey{99, 1, torch::arange(0, 3, torch::kLong)});
  try {
    m->forward(torch::randint(61, {4, 16}));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "AdaptiveRankSelector: keyed Gumbel noise needs (batch, T, features) input with "
                  "one sequence index per row; got [4, 16, "),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find(" for 3 sequence indices"), std::string::npos) << e.what();
  }
  m->set_gumbel_noise(std::nullopt);
}

TEST(GumbelNoise, KeyedUniformIsUniformAndIndependentOfTheRowsAround) {
  GumbelNoiseKey key{7, 3, torch::arange(0, 64, torch::kLong)};
  auto u = keyed_uniform(key, 2, 128, 4);
  ASSERT_EQ(u.sizes(), torch::IntArrayRef({64, 128, 4}));
  EXPECT_GE(u.min().item<double>(), 0.0);
  EXPECT_LT(u.max().item<double>(), 1.0);
  // 32768 draws: mean 1/2 and variance 1/12 within ~5 standard errors.
  EXPECT_NEAR(u.mean().item<double>(), 0.5, 0.01);
  EXPECT_NEAR(u.var().item<double>(), 1.0 / 12.0, 0.003);
  GumbelNoiseKey row{7, 3, torch::tensor({int64_t(17)})};
  EXPECT_TRUE(torch::equal(keyed_uniform(row, 2, 128, 4)[0], u[17]));
}

}  // namespace
}  // namespace shc
