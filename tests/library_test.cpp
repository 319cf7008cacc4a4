// Hyper-connections as a library (SPEC §4.3, issue 12): the exact simplex projection, the
// `history` residual kind, the HyperConnections wrapper (disable, n = 1, frac-connections) and
// shc::inject on a small MLP and on SHCTransformer. Tolerances: "exact" means torch::equal (the
// same bits); otherwise the bound is given where it is checked and why.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/hyper_connection.h"
#include "core/hyper_connections.h"
#include "core/inject.h"
#include "core/routing/hc_router.h"
#include "core/routing/history_router.h"
#include "core/routing/mhc_router.h"
#include "core/routing/shc_router.h"
#include "core/routing_analyzer.h"
#include "core/simplex_projection.h"
#include "core/transformer.h"
#include "tests/test_model_config.h"
#include "tests/test_models.h"

namespace shc {
namespace {

double max_abs(const torch::Tensor& t) {
  return t.abs().max().item<double>();
}

torch::Tensor f64(std::vector<double> v) {
  return torch::tensor(v, torch::kDouble);
}

// ---------------------------------------------------------------------------------------------
// Simplex projection

// The exact projection onto { a >= lower, sum a = 1 } by enumerating supports (KKT): for a free
// set S, a_S = v_S - t with t fixed by the sum, a_i = lower_i elsewhere; the feasible candidate
// with optimal multipliers is the closest feasible candidate. Independent of the sort-based code.
torch::Tensor brute_force_projection(const torch::Tensor& v, const torch::Tensor& lower) {
  const int64_t h = v.size(0);
  auto vv = v.accessor<double, 1>();
  auto lo = lower.accessor<double, 1>();
  std::vector<double> best;
  double best_distance = INFINITY;
  for (int64_t mask = 1; mask < (int64_t(1) << h); ++mask) {
    double free_sum = 0, fixed_sum = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < h; ++i) {
      if (mask >> i & 1) {
        free_sum += vv[i];
        ++count;
      } else {
        fixed_sum += lo[i];
      }
    }
    const double t = (free_sum + fixed_sum - 1) / double(count);
    std::vector<double> a(h);
    bool feasible = true;
    double distance = 0;
    for (int64_t i = 0; i < h; ++i) {
      a[i] = (mask >> i & 1) ? vv[i] - t : lo[i];
      feasible = feasible && a[i] >= lo[i] - 1e-15;
      distance += (a[i] - vv[i]) * (a[i] - vv[i]);
    }
    if (feasible && distance < best_distance) {
      best_distance = distance;
      best = a;
    }
  }
  return torch::tensor(best, torch::kDouble);
}

TEST(SimplexProjection, HandComputedCases) {
  struct Case {
    std::vector<double> v, expected;
  };
  const std::vector<Case> cases = {
      {{0.5, 0.25, 0.25}, {0.5, 0.25, 0.25}},  // already on the simplex: unchanged
      {{1, 1}, {0.5, 0.5}},                    // tie
      {{2, 0}, {1, 0}},                        // a vertex
      {{0.6, 0.6, -1}, {0.5, 0.5, 0}},         // tie on the support, one pruned
      {{1, 0.5, 0.5, -2}, {2.0 / 3, 1.0 / 6, 1.0 / 6, 0}},
      {{-5, -5, -6}, {0.5, 0.5, 0}},                   // all negative
      {{0.2, 0.2, 0.2}, {1.0 / 3, 1.0 / 3, 1.0 / 3}},  // all tied, below the simplex
      {{3, 1, 1, 0}, {1, 0, 0, 0}},                    // tied entries both pruned
      {{0, 0.5, 1, 0.25}, {0, 0.25, 0.75, 0}},         // 0.25 sits exactly at the threshold
      {{5}, {1}},                                      // H = 1
  };
  for (const auto& c : cases) {
    auto got = project_to_simplex(f64(c.v));
    EXPECT_LE(max_abs(got - f64(c.expected)), 1e-15) << got;
    EXPECT_EQ(got.scalar_type(), torch::kDouble);
  }
  // Bit-exact where the arithmetic is exact in binary.
  EXPECT_TRUE(torch::equal(project_to_simplex(f64({0.5, 0.25, 0.25})), f64({0.5, 0.25, 0.25})));
  EXPECT_TRUE(torch::equal(project_to_simplex(f64({1, 0, 0, 0})), f64({1, 0, 0, 0})));
}

TEST(SimplexProjection, PropertiesOnRandomInputsAgainstBruteForce) {
  torch::manual_seed(1);
  for (int64_t h = 1; h <= 8; ++h) {
    for (double scale : {0.1, 1.0, 10.0}) {
      auto v = torch::randn({50, h}, torch::kDouble) * scale;
      auto a = project_to_simplex(v);
      EXPECT_GE(a.min().item<double>(), 0.0) << "non-negative, exactly";
      EXPECT_LE(max_abs(a.sum(-1) - 1), 1e-14) << "sums to 1";
      // Idempotent (a point on the simplex stays), shift-invariant.
      EXPECT_LE(max_abs(project_to_simplex(a) - a), 1e-15);
      EXPECT_LE(max_abs(project_to_simplex(v + 3.5) - a), 1e-13);
      for (int64_t r = 0; r < 50; r += 7) {
        auto expected = brute_force_projection(v[r], torch::zeros({h}, torch::kDouble));
        EXPECT_LE(max_abs(a[r] - expected), 1e-13) << v[r];
      }
      // fp32: the same within float round-off.
      auto a32 = project_to_simplex(v.to(torch::kFloat));
      EXPECT_EQ(a32.scalar_type(), torch::kFloat);
      EXPECT_GE(a32.min().item<double>(), 0.0);
      EXPECT_LE(max_abs(a32.to(torch::kDouble) - a), 2e-6 * std::max(1.0, scale));
    }
  }
  // Batched over leading dimensions.
  auto v = torch::randn({3, 4, 5}, torch::kDouble);
  EXPECT_LE(
      max_abs(project_to_simplex(v).reshape({12, 5}) - project_to_simplex(v.reshape({12, 5}))),
      0.0);
}

TEST(SimplexProjection, FeasibleInputIsReturnedUnchanged) {
  torch::manual_seed(2);
  for (int64_t h : {2, 3, 5, 16}) {
    auto a = torch::softmax(torch::randn({40, h}, torch::kDouble) * 3, -1);
    // The only change is the round-off of the sum (theta = (sum - 1) / rho ~ 1e-16).
    EXPECT_LE(max_abs(project_to_simplex(a) - a), 1e-15) << "h=" << h;
    // A sparse feasible point (some exact zeros) too.
    auto sparse = project_to_simplex(torch::randn({40, h}, torch::kDouble));
    EXPECT_LE(max_abs(project_to_simplex(sparse) - sparse), 1e-15);
  }
}

TEST(SimplexProjection, IdentityFloorHoldsAndIsTheExactProjection) {
  torch::manual_seed(3);
  for (double floor : {0.05, 0.3, 0.9}) {
    for (int64_t h : {2, 4, 6}) {
      for (int64_t index : {int64_t(0), h - 1}) {
        auto v = torch::randn({30, h}, torch::kDouble) * 2;
        v.select(-1, index).sub_(3);  // pushes the floored entry below the floor often
        auto a = project_to_simplex(v, index, floor);
        EXPECT_GE(a.select(-1, index).min().item<double>(), floor - 1e-15);
        EXPECT_GE(a.min().item<double>(), 0.0);
        EXPECT_LE(max_abs(a.sum(-1) - 1), 1e-14);
        auto lower = torch::zeros({h}, torch::kDouble);
        lower[index] = floor;
        for (int64_t r = 0; r < 30; r += 5) {
          EXPECT_LE(max_abs(a[r] - brute_force_projection(v[r], lower)), 1e-13)
              << "floor " << floor << " v " << v[r];
        }
      }
    }
  }
  // By hand: the latest state's weight is lifted to the floor, the rest shares 1 - floor.
  EXPECT_LE(max_abs(project_to_simplex(f64({0, 1, 0}), 0, 0.2) - f64({0.2, 0.8, 0})), 1e-15);
  EXPECT_LE(max_abs(project_to_simplex(f64({-3, 1, 1}), 0, 0.1) - f64({0.1, 0.45, 0.45})), 1e-15);
  // Already above the floor and feasible: unchanged.
  EXPECT_LE(max_abs(project_to_simplex(f64({0.5, 0.25, 0.25}), 0, 0.2) - f64({0.5, 0.25, 0.25})),
            1e-15);
  EXPECT_THROW(project_to_simplex(f64({1, 0}), 0, 1.0), c10::Error);
}

TEST(SimplexProjection, GradientEqualsFiniteDifferencesAndLeavesAVertex) {
  torch::manual_seed(4);
  // Generic points (no ties, no entry at the threshold): the Jacobian is exact there.
  for (double floor : {0.0, 0.25}) {
    for (int64_t trial = 0; trial < 5; ++trial) {
      auto v = torch::randn({6}, torch::kDouble);
      auto g = torch::randn({6}, torch::kDouble);
      auto x = v.clone().requires_grad_(true);
      (project_to_simplex(x, 0, floor) * g).sum().backward();
      auto numeric = torch::zeros({6}, torch::kDouble);
      const double eps = 1e-7;
      for (int64_t i = 0; i < 6; ++i) {
        auto plus = v.clone(), minus = v.clone();
        plus[i] += eps;
        minus[i] -= eps;
        numeric[i] =
            ((project_to_simplex(plus, 0, floor) - project_to_simplex(minus, 0, floor)) * g).sum() /
            (2 * eps);
      }
      EXPECT_LE(max_abs(x.grad() - numeric), 1e-6) << "floor " << floor << " v " << v;
    }
  }
  // At the vertex e_0 the gradient is the simplex-tangent part of the upstream gradient,
  // g - mean(g): not zero, so weights at a vertex can leave it (history_router.h says when not).
  auto x = f64({1, 0, 0, 0}).requires_grad_(true);
  auto g = f64({0.3, -1.0, 2.0, 0.5});
  (project_to_simplex(x) * g).sum().backward();
  EXPECT_LE(max_abs(x.grad() - (g - g.mean())), 1e-15) << x.grad();
}

// ---------------------------------------------------------------------------------------------
// The history kind

ModelConfig history_config(int64_t window) {
  auto cfg = test::small_model_config(ResidualKind::kHistory);
  cfg.n_streams = window;
  return cfg;
}

std::map<std::string, torch::Tensor> parameters_by_name(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : m.named_parameters()) out[item.key()] = item.value();
  return out;
}

// Trains `m` for `steps` AdamW steps on one fixed batch and returns the losses.
std::vector<double> train_steps(SHCTransformer& m, const torch::Tensor& ids, int steps,
                                double lr = 1e-2) {
  torch::optim::AdamW opt(m->parameters(), torch::optim::AdamWOptions(lr).weight_decay(0.0));
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    auto loss = m->forward(ids, ids);
    loss.backward();
    opt.step();
    losses.push_back(loss.item<double>());
  }
  return losses;
}

TEST(History, WindowOfOneEqualsThePlainResidualThroughTraining) {
  torch::manual_seed(5);
  SHCTransformer plain(test::small_model_config(ResidualKind::kResidual));
  torch::manual_seed(5);
  SHCTransformer history(history_config(1));
  // Same initial weights (the history router draws no random numbers), plus one weight per
  // sublayer that the simplex of one entry pins to 1.
  auto p = parameters_by_name(*plain), h = parameters_by_name(*history);
  EXPECT_EQ(h.size(), p.size() + 2 * 2);
  for (const auto& [name, value] : p) {
    ASSERT_TRUE(h.count(name)) << name;
    EXPECT_TRUE(torch::equal(h.at(name), value)) << name;
  }
  auto ids = torch::randint(61, {2, 12});
  EXPECT_TRUE(torch::equal(plain->forward(ids), history->forward(ids)));
  // Exactly the same training trajectory.
  auto lp = train_steps(plain, ids, 3), lh = train_steps(history, ids, 3);
  for (int s = 0; s < 3; ++s) EXPECT_EQ(lp[s], lh[s]) << "step " << s;
  for (const auto& [name, value] : parameters_by_name(*plain)) {
    EXPECT_TRUE(torch::equal(parameters_by_name(*history).at(name), value)) << name;
  }
}

// Sets every history router's window weights of m to `w`.
void set_window_logits(SHCTransformer& m, const torch::Tensor& w) {
  torch::NoGradGuard g;
  for (const auto& b : m->block_list()) {
    for (const auto& hc : {b->attn_hc, b->ffn_hc}) {
      hc->router()->named_parameters()["window_logits"].copy_(w);
    }
  }
}

TEST(History, WeightsOnTheLatestStateEqualThePlainResidualForAnyWindow) {
  torch::manual_seed(6);
  SHCTransformer plain(test::small_model_config(ResidualKind::kResidual));
  torch::manual_seed(6);
  SHCTransformer history(history_config(4));
  auto ids = torch::randint(61, {2, 12});
  // The initial weights (0.9 latest, 0.1 older) mix in earlier states.
  EXPECT_GT(max_abs(plain->forward(ids) - history->forward(ids)), 1e-4);
  // a = e_0: the window holds older states but gives them weight 0 (1 * x + 0 * older is exact),
  // and the head reads the latest state.
  set_window_logits(history, f64({1, 0, 0, 0}));
  EXPECT_TRUE(torch::equal(plain->forward(ids), history->forward(ids)));
  // Only the last sublayer's window changed: the first one's holds four copies of the
  // embedding, where any weights on the simplex give the same mixture.
  {
    torch::NoGradGuard g;
    history->block_list()[1]->ffn_hc->router()->named_parameters()["window_logits"].copy_(
        f64({0.4, 0.3, 0.2, 0.1}));
  }
  EXPECT_GT(max_abs(plain->forward(ids) - history->forward(ids)), 1e-4);
}

TEST(History, RoutingIsTheShiftRegisterWithSimplexWeights) {
  auto cfg = history_config(3);
  cfg.history_floor = 0.2;
  HyperConnection hc(cfg, 0);
  auto* router = dynamic_cast<HistoryRouterImpl*>(hc->router().get());
  ASSERT_NE(router, nullptr);
  {
    torch::NoGradGuard g;
    router->window_logits.copy_(torch::tensor({-5.0, 1.0, 0.5}));
  }
  auto a = router->window_weights();
  // The floor lifts the latest weight from 0 to 0.2; the rest is the projection of the others.
  EXPECT_LE(max_abs(a - torch::tensor({0.2f, 0.65f, 0.15f})), 1e-6);
  torch::manual_seed(7);
  auto s = torch::randn({2, 5, 3, 8});
  auto y = torch::randn({2, 5, 8});
  auto r = hc->route(s);
  EXPECT_TRUE(torch::equal(hc->read(s, r), s.select(-2, 0)));
  auto out = hc->write(s, y, r);
  auto latest = a[0] * s.select(-2, 0) + a[1] * s.select(-2, 1) + a[2] * s.select(-2, 2) + y;
  EXPECT_LE(max_abs(out.select(-2, 0) - latest), 1e-5);
  EXPECT_TRUE(torch::equal(out.select(-2, 1), s.select(-2, 0)));
  EXPECT_TRUE(torch::equal(out.select(-2, 2), s.select(-2, 1)));
  // The split path the routing benchmark times builds the same H_res.
  auto x_tilde = normalized_stream_state(s, cfg.norm_eps);
  EXPECT_TRUE(torch::equal(
      router->residual_from_coefficients(router->residual_coefficients(x_tilde)), r.res));
}

TEST(History, DetachedHistoryPassesGradientOnlyToTheLatestState) {
  for (bool detach : {false, true}) {
    auto cfg = history_config(3);
    cfg.history_detach = detach;
    HyperConnection hc(cfg, 0);
    {
      torch::NoGradGuard g;
      hc->router()->named_parameters()["window_logits"].copy_(torch::tensor({0.5, 0.3, 0.2}));
    }
    auto s = torch::randn({4, 3, 8}, torch::requires_grad());
    auto w = hc->router()->named_parameters()["window_logits"];
    auto r = hc->route(s);
    hc->write(s, torch::zeros({4, 8}), r).select(-2, 0).sum().backward();
    auto grad = s.grad();
    EXPECT_LE(max_abs(grad.select(-2, 0) - 0.5), 1e-6);
    EXPECT_LE(max_abs(grad.select(-2, 1) - (detach ? 0.0 : 0.3)), 1e-6);
    EXPECT_LE(max_abs(grad.select(-2, 2) - (detach ? 0.0 : 0.2)), 1e-6);
    // The weights themselves still learn from every window entry.
    EXPECT_GT(max_abs(w.grad()), 0.0);
  }
}

TEST(History, GumbelMixingInTrainingOnly) {
  auto cfg = history_config(4);
  cfg.history_tau = 0.5;
  cfg.history_floor = 0.1;
  HyperConnection hc(cfg, 3);
  auto* router = dynamic_cast<HistoryRouterImpl*>(hc->router().get());
  {
    torch::NoGradGuard g;
    router->window_logits.copy_(torch::tensor({0.5, 0.4, -2.0, 0.3}));  // prunes entry 2
  }
  auto a = router->window_weights();
  ASSERT_EQ(a[2].item<double>(), 0.0);
  auto s = torch::randn({3, 6, 4, 8});
  hc->train();
  auto rows = hc->route(s).res.select(-2, 0);  // (3, 6, 4): per-token weights
  EXPECT_LE(max_abs(rows.sum(-1) - 1), 1e-6);
  EXPECT_GE(rows.min().item<double>(), 0.0);
  EXPECT_GE(rows.select(-1, 0).min().item<double>(), 0.1 - 1e-6) << "floor after the noise";
  EXPECT_EQ(max_abs(rows.select(-1, 2)), 0.0) << "a pruned entry stays pruned";
  EXPECT_GT(max_abs(rows - a), 1e-3) << "noise moved the weights";
  EXPECT_GT(max_abs(rows[0][0] - rows[1][3]), 1e-3) << "per token";
  // Keyed noise depends only on (seed, step, sequence, token): a row alone equals its batch row.
  GumbelNoiseKey key{11, 2, torch::tensor({int64_t(5), int64_t(9), int64_t(17)})};
  router->set_noise_key(&key);
  auto keyed = hc->route(s).res;
  GumbelNoiseKey one{11, 2, torch::tensor({int64_t(17)})};
  router->set_noise_key(&one);
  EXPECT_TRUE(torch::equal(hc->route(s.narrow(0, 2, 1)).res[0], keyed[2]));
  router->set_noise_key(nullptr);
  hc->eval();
  auto eval_rows = hc->route(s).res.select(-2, 0);
  EXPECT_TRUE(torch::equal(eval_rows, a.expand_as(eval_rows)));
}

TEST(History, TransformerTrainsAndMovesTheWindowWeights) {
  for (bool options : {false, true}) {
    SCOPED_TRACE(options ? "floor 0.2, Gumbel tau 0.5, detached" : "plain history");
    auto cfg = history_config(4);
    if (options) {
      cfg.history_floor = 0.2;
      cfg.history_tau = 0.5;
      cfg.history_detach = true;
    }
    torch::manual_seed(8);
    SHCTransformer m(cfg);
    auto ids = torch::randint(61, {4, 16});
    auto losses = train_steps(m, ids, 25);
    std::cout << "history" << (options ? " (options)" : "") << ": loss " << losses.front() << " -> "
              << losses.back() << "\n";
    // Memorising one batch: ln(61) = 4.11 at the start; 25 steps at lr 1e-2 reach < 2.5.
    EXPECT_LT(losses.back(), 0.6 * losses.front());
    double moved = 0;
    const auto initial = torch::tensor({0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3});
    for (const auto& b : m->block_list()) {
      for (const auto& hc : {b->attn_hc, b->ffn_hc}) {
        auto* r = dynamic_cast<HistoryRouterImpl*>(hc->router().get());
        auto a = r->window_weights().to(torch::kDouble);
        EXPECT_GE(a[0].item<double>(), cfg.history_floor - 1e-6);
        EXPECT_LE(std::abs(a.sum().item<double>() - 1), 1e-6);
        moved = std::max(moved, max_abs(a - initial));
      }
    }
    EXPECT_GT(moved, 1e-2) << "the window weights learned";
  }
}

TEST(History, RoutingAnalyzerReportsHistoryModels) {
  torch::manual_seed(9);
  RoutingAnalyzer analyzer(SHCTransformer(history_config(3)));
  analyzer.analyze_batch(torch::randint(61, {2, 8}));
  EXPECT_EQ(analyzer.tokens_seen(), 16);
  EXPECT_NE(analyzer.to_json().find("spectral_norm_mean"), std::string::npos);
}

TEST(History, ConfigAndParsing) {
  EXPECT_EQ(parse_residual_kind("history"), ResidualKind::kHistory);
  EXPECT_EQ(to_string(ResidualKind::kHistory), "history");
  auto cfg = history_config(4);
  cfg.history_floor = 1.0;
  EXPECT_THROW(cfg.validate(), std::invalid_argument);
  cfg = history_config(4);
  cfg.history_tau = -1;
  EXPECT_THROW(cfg.validate(), std::invalid_argument);
  cfg = history_config(4);
  cfg.stream_rank = 2;
  EXPECT_THROW(cfg.validate(), std::invalid_argument);
  cfg = history_config(4);
  cfg.history_floor = 0.1;
  cfg.history_detach = true;
  EXPECT_NE(cfg.summary().find("history n=4 history_floor=0.1 history_detach"), std::string::npos)
      << cfg.summary();
  EXPECT_EQ(SHCTransformer(cfg)->stream_reducer.is_empty(), true);
}

// ---------------------------------------------------------------------------------------------
// The wrapper

const std::vector<ResidualKind> kAllKinds = {ResidualKind::kResidual, ResidualKind::kHC,
                                             ResidualKind::kMHC, ResidualKind::kSHC,
                                             ResidualKind::kHistory};

HyperConnectionsOptions options_for(ResidualKind kind) {
  return HyperConnectionsOptions().kind(kind).k_mixture(3).top_k(2);
}

int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

TEST(HyperConnections, DisableIsExactlyThePlainResidual) {
  for (auto kind : kAllKinds) {
    for (int64_t fracs : {1, 2}) {
      if (kind == ResidualKind::kHistory && fracs > 1) continue;
      SCOPED_TRACE(to_string(kind) + " num_fracs " + std::to_string(fracs));
      torch::manual_seed(10);
      auto [init, expand, reduce] =
          make_hyper_connections(4, options_for(kind).num_fracs(fracs).disable(true));
      torch::nn::Linear f(16, 16);
      auto block = init(16, f);
      EXPECT_TRUE(block->disabled());
      EXPECT_EQ(count_parameters(*block), count_parameters(*f)) << "no routing parameters";
      auto x = torch::randn({2, 5, 16});
      auto s = expand(x);
      EXPECT_TRUE(s.is_same(x));
      EXPECT_TRUE(torch::equal(reduce(block(s)), x + f(x)));
    }
  }
}

TEST(HyperConnections, OneStreamOneFractionIsThePlainResidualForEveryKind) {
  for (auto kind : kAllKinds) {
    SCOPED_TRACE(to_string(kind));
    auto hcs = HyperConnections(1, options_for(kind));
    EXPECT_TRUE(hcs.disabled()) << "the default of disable for n = 1, num_fracs = 1";
    torch::manual_seed(11);
    torch::nn::Linear f(16, 16);
    auto block = hcs(16, f);
    auto x = torch::randn({3, 16});
    EXPECT_TRUE(torch::equal(hcs.reduce(block(hcs.expand(x))), x + f(x)));
  }
  // Forced on with n = 1, hc and history still start exactly at x + f(x) (H = 1 everywhere at
  // init); mhc's and shc's sigmoid H_pre (0.95 at init) scale the branch input and so differ.
  for (auto kind : {ResidualKind::kHC, ResidualKind::kHistory}) {
    SCOPED_TRACE(to_string(kind) + " forced on");
    auto hcs = HyperConnections(1, options_for(kind).disable(false));
    torch::manual_seed(12);
    torch::nn::Linear f(16, 16);
    auto block = hcs(16, f);
    EXPECT_FALSE(block->disabled());
    auto x = torch::randn({3, 16});
    EXPECT_TRUE(torch::equal(hcs.reduce(block(hcs.expand(x))), x + f(x)));
  }
}

TEST(HyperConnections, WrapperReusesTheCoreRouters) {
  torch::nn::Linear f(16, 16);
  EXPECT_NE(dynamic_cast<HCRouterImpl*>(
                HyperConnections(4, options_for(ResidualKind::kHC))(16, f)->hc->router().get()),
            nullptr);
  EXPECT_NE(dynamic_cast<MHCRouterImpl*>(
                HyperConnections(4, options_for(ResidualKind::kMHC))(16, f)->hc->router().get()),
            nullptr);
  EXPECT_NE(dynamic_cast<SHCRouterImpl*>(
                HyperConnections(4, options_for(ResidualKind::kSHC))(16, f)->hc->router().get()),
            nullptr);
  EXPECT_NE(
      dynamic_cast<HistoryRouterImpl*>(
          HyperConnections(4, options_for(ResidualKind::kHistory))(16, f)->hc->router().get()),
      nullptr);
  // Branch numbering: the k-th wrapped branch reads stream k mod n (HC's static H_pre).
  auto hcs = HyperConnections(3, options_for(ResidualKind::kHC));
  for (int64_t k = 0; k < 4; ++k) {
    auto block = hcs(16, f);
    auto* r = dynamic_cast<HCRouterImpl*>(block->hc->router().get());
    EXPECT_TRUE(torch::equal(r->pre->bias, depth_one_hot(3, k))) << "branch " << k;
  }
}

using test::TanhLinear;

// Two wrapped tanh(Linear) branches between expand and reduce, with fractions.
struct FracModel {
  HyperConnections hcs;
  HyperConnectionBranch b1{nullptr}, b2{nullptr};
  FracModel(int64_t n, HyperConnectionsOptions o, int64_t d) : hcs(n, std::move(o)) {
    b1 = hcs(d, TanhLinear(d));
    b2 = hcs(d, TanhLinear(d));
  }
  torch::Tensor forward(const torch::Tensor& x) { return hcs.reduce(b2(b1(hcs.expand(x)))); }
};

TEST(HyperConnections, FracConnectionsKeepShapesAndGradients) {
  const int64_t d = 32;
  for (auto kind : {ResidualKind::kHC, ResidualKind::kMHC, ResidualKind::kSHC}) {
    for (int64_t n : {1, 2}) {
      SCOPED_TRACE(to_string(kind) + " n " + std::to_string(n) + " num_fracs 4");
      torch::manual_seed(13);
      FracModel m(n, options_for(kind).num_fracs(4), d);
      {  // move the zero-initialised projections off zero, so every path carries gradient
        torch::NoGradGuard g;
        for (auto& p : m.b1->hc->parameters()) p.add_(torch::randn_like(p) * 0.1);
        for (auto& p : m.b2->hc->parameters()) p.add_(torch::randn_like(p) * 0.1);
      }
      auto x = torch::randn({2, 7, d});
      auto s = m.hcs.expand(x);
      EXPECT_EQ(s.sizes(), (std::vector<int64_t>{2, 7, n * 4, d / 4}));
      EXPECT_EQ(m.b1(s).sizes(), s.sizes());
      auto y = m.forward(x);
      EXPECT_EQ(y.sizes(), x.sizes());
      y.pow(2).mean().backward();
      for (auto* b : {&m.b1, &m.b2}) {
        for (const auto& item : (*b)->named_parameters()) {
          const auto& grad = item.value().grad();
          ASSERT_TRUE(grad.defined()) << item.key();
          EXPECT_TRUE(torch::isfinite(grad).all().item<bool>()) << item.key();
          EXPECT_GT(grad.abs().sum().item<double>(), 0.0) << item.key();
        }
      }
    }
  }
}

TEST(HyperConnections, FractionsAreLaidOutAndReadPerFraction) {
  const int64_t d = 24;
  // hc at init (H_res = I, H_pre reads stream 0 of every fraction, H_post = 1): one stream split
  // into 4 fractions is exactly x + f(x); a wrong fraction order would scramble the features.
  torch::manual_seed(14);
  torch::nn::Linear f(d, d);
  auto one = HyperConnections(1, options_for(ResidualKind::kHC).num_fracs(4));
  auto x = torch::randn({3, d});
  EXPECT_TRUE(torch::equal(one.reduce(one(d, f)(one.expand(x))), x + f(x)));
  // Streams and fractions combined (n = 2, m = 3): both streams carry x + f(x); reduce sums them.
  auto two = HyperConnections(2, options_for(ResidualKind::kHC).num_fracs(3));
  auto block = two(d, f);  // layer 0: reads stream 0 of each fraction
  auto* r = dynamic_cast<HCRouterImpl*>(block->hc->router().get());
  EXPECT_TRUE(torch::equal(r->pre->bias, torch::tensor({1.f, 1.f, 1.f, 0.f, 0.f, 0.f})));
  auto next = two(d, f);  // layer 1: stream 1 of each fraction
  auto* r1 = dynamic_cast<HCRouterImpl*>(next->hc->router().get());
  EXPECT_TRUE(torch::equal(r1->pre->bias, torch::tensor({0.f, 0.f, 0.f, 1.f, 1.f, 1.f})));
  EXPECT_LE(max_abs(two.reduce(block(two.expand(x))) - 2 * (x + f(x))), 1e-5);
  // The manual halves equal forward.
  auto s = two.expand(x);
  auto in = block->read(s);
  EXPECT_TRUE(torch::equal(block->write(s, f(in.input), in.routing), block(s)));
  // History cannot split states into fractions.
  EXPECT_THROW(HyperConnections(4, options_for(ResidualKind::kHistory).num_fracs(2))(d, f),
               c10::Error);
  EXPECT_THROW(block(x), c10::Error) << "an unexpanded state is refused";
}

TEST(HyperConnections, HistoryWrapperIsAWindowOverWrappedBranches) {
  // Three wrapped branches with window 3 and weights set by hand: the result equals the
  // recurrence x_{l+1} = f_l(x_l) + sum_k a_k x_{l-k} written out directly.
  const int64_t d = 8;
  auto hcs = HyperConnections(3, options_for(ResidualKind::kHistory));
  torch::manual_seed(15);
  std::vector<torch::nn::Linear> fs;
  std::vector<HyperConnectionBranch> blocks;
  std::vector<torch::Tensor> weights = {f64({1, 0, 0}), f64({0.5, 0.5, 0}), f64({0.2, 0.3, 0.5})};
  for (int l = 0; l < 3; ++l) {
    fs.emplace_back(d, d);
    blocks.push_back(hcs(d, fs.back()));
    torch::NoGradGuard g;
    blocks.back()->hc->router()->named_parameters()["window_logits"].copy_(weights[l]);
  }
  auto x0 = torch::randn({4, d});
  auto s = hcs.expand(x0);
  for (auto& b : blocks) s = b(s);
  auto x1 = fs[0](x0) + x0;
  auto x2 = fs[1](x1) + 0.5 * x1 + 0.5 * x0;
  auto x3 = fs[2](x2) + 0.2 * x2 + 0.3 * x1 + 0.5 * x0;  // the window before x0 is x0 itself
  EXPECT_LE(max_abs(hcs.reduce(s) - x3), 1e-5);
}

// ---------------------------------------------------------------------------------------------
// inject

// A residual block the way users write them: F(x) = x + W2 relu(W1 x).
struct ResidualMLPImpl : torch::nn::Module {
  explicit ResidualMLPImpl(int64_t d) {
    fc1 = register_module("fc1", torch::nn::Linear(d, 2 * d));
    fc2 = register_module("fc2", torch::nn::Linear(2 * d, d));
  }
  torch::Tensor forward(const torch::Tensor& x) { return x + fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(ResidualMLP);

torch::nn::Sequential small_mlp() {
  return torch::nn::Sequential(torch::nn::Linear(8, 16), ResidualMLP(16), ResidualMLP(16),
                               ResidualMLP(16), torch::nn::Linear(16, 4));
}

TEST(Inject, MLPKeepsWeightsAndWithDisableItsOutputs) {
  torch::manual_seed(16);
  auto mlp = small_mlp();
  auto x = torch::randn({5, 8});
  auto before = mlp->forward(x);
  auto originals = mlp->parameters();
  std::vector<torch::Tensor> values;
  for (const auto& p : originals) values.push_back(p.detach().clone());
  auto names = inject(*mlp, name_matches("[1-3]"),
                      InjectOptions(16).num_streams(4).connections(
                          HyperConnectionsOptions().kind(ResidualKind::kSHC).disable(true)));
  EXPECT_EQ(names, (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_TRUE(mlp[1]->as<InjectedModuleImpl>() != nullptr);
  auto now = mlp->parameters();
  ASSERT_EQ(now.size(), originals.size()) << "disable adds no parameters";
  for (size_t i = 0; i < now.size(); ++i) {
    EXPECT_TRUE(now[i].is_same(originals[i]));
    EXPECT_TRUE(torch::equal(now[i], values[i]));
  }
  EXPECT_EQ(mlp->named_parameters().contains("1.module.fc1.weight"), true);
  EXPECT_TRUE(torch::equal(mlp->forward(x), before));
}

TEST(Inject, MLPWithStreamsStartsAtItsOutputsAndTrains) {
  for (auto kind : {ResidualKind::kHC, ResidualKind::kSHC, ResidualKind::kHistory}) {
    SCOPED_TRACE(to_string(kind));
    torch::manual_seed(17);
    auto mlp = small_mlp();
    auto x = torch::randn({32, 8});
    auto target = torch::randn({32, 4});
    auto before = mlp->forward(x).detach();
    auto originals = mlp->parameters();
    inject(
        *mlp,
        [](const std::string&, const torch::nn::Module& m) {
          return m.as<ResidualMLPImpl>() != nullptr;
        },
        InjectOptions(16).num_streams(4).connections(HyperConnectionsOptions().kind(kind)));
    std::set<const void*> now;
    for (const auto& p : mlp->parameters()) now.insert(p.unsafeGetTensorImpl());
    for (const auto& p : originals) EXPECT_TRUE(now.count(p.unsafeGetTensorImpl()));
    EXPECT_GT(mlp->parameters().size(), originals.size()) << "routing parameters added";
    auto after = mlp->forward(x);
    if (kind == ResidualKind::kHC) {
      // hc starts at the original function (identity routing, identical streams, the host sees
      // their mean): x + (F(x) - x) differs from F(x) by round-off.
      EXPECT_LE(max_abs(after - before), 1e-5);
    }
    std::vector<torch::Tensor> routing_before;
    for (const auto& p : mlp[2]->as<InjectedModuleImpl>()->connection->parameters()) {
      routing_before.push_back(p.detach().clone());
    }
    torch::optim::AdamW opt(mlp->parameters(), torch::optim::AdamWOptions(1e-2));
    double first = 0, last = 0;
    for (int s = 0; s < 30; ++s) {
      opt.zero_grad();
      auto loss = torch::mse_loss(mlp->forward(x), target);
      loss.backward();
      opt.step();
      (s == 0 ? first : last) = loss.item<double>();
    }
    EXPECT_LT(last, 0.7 * first);
    // The routing itself learned (the second injected module: the first one's streams are all
    // copies of its input, which history's weights cannot tell apart).
    const auto routing_after = mlp[2]->as<InjectedModuleImpl>()->connection->parameters();
    ASSERT_EQ(routing_after.size(), routing_before.size());
    double routing_change = 0;
    for (size_t i = 0; i < routing_after.size(); ++i) {
      routing_change = std::max(routing_change, max_abs(routing_after[i] - routing_before[i]));
    }
    EXPECT_GT(routing_change, 1e-3);
  }
}

TEST(Inject, RefusesWhatCannotBeRepointedAndLeavesTheModelUnchanged) {
  torch::manual_seed(18);
  auto mlp = small_mlp();
  const auto count = mlp->parameters().size();
  auto opts = InjectOptions(16).num_streams(2);
  // "1.fc1" is a typed member of ResidualMLP: no walk can redirect its calls. "1" alone would
  // work, so the failure must leave "1" untouched too.
  try {
    inject(*mlp, name_matches("1|2\\.fc1"), opts);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("cannot re-point '2.fc1'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(mlp[1]->as<InjectedModuleImpl>(), nullptr);
  EXPECT_EQ(mlp->parameters().size(), count);
  EXPECT_THROW(inject(*mlp, name_matches("nothing"), opts), std::invalid_argument);
  // A host that changes the value between two injected modules is an error, not a restart.
  auto host = torch::nn::Sequential(ResidualMLP(16),
                                    torch::nn::Functional([](torch::Tensor t) { return t * 2; }),
                                    ResidualMLP(16));
  inject(*host, name_matches("0|2"), opts);
  EXPECT_THROW(host->forward(torch::randn({2, 16})), c10::Error);
}

TEST(Inject, TransformerWithResidualKind) {
  auto cfg = test::small_model_config(ResidualKind::kResidual);
  auto ids = torch::randint(61, {2, 12});
  {  // disable: the same weights and exactly the same logits
    torch::manual_seed(19);
    SHCTransformer m(cfg);
    auto before = m->forward(ids);
    auto originals = m->parameters();
    auto names =
        inject(*m, name_matches("blocks\\.[0-9]+"),
               InjectOptions(cfg.hidden_dim)
                   .connections(HyperConnectionsOptions().kind(ResidualKind::kHC).disable(true)));
    EXPECT_EQ(names, (std::vector<std::string>{"blocks.0", "blocks.1"}));
    auto now = m->parameters();
    ASSERT_EQ(now.size(), originals.size());
    for (size_t i = 0; i < now.size(); ++i) EXPECT_TRUE(now[i].is_same(originals[i]));
    EXPECT_TRUE(torch::equal(m->forward(ids), before));
  }
  for (auto kind : {ResidualKind::kHC, ResidualKind::kSHC, ResidualKind::kHistory}) {
    SCOPED_TRACE(to_string(kind));
    torch::manual_seed(20);
    SHCTransformer m(cfg);
    auto before = m->forward(ids).detach();
    inject(*m, name_matches("blocks\\.[0-9]+"),
           InjectOptions(cfg.hidden_dim)
               .num_streams(4)
               .connections(HyperConnectionsOptions().kind(kind).k_mixture(3)));
    EXPECT_EQ(m->named_parameters().contains("blocks.1.module.attn.q_proj.weight"), true);
    EXPECT_EQ(m->named_parameters().contains("blocks.1.connection.hc.router.pre.bias") ||
                  m->named_parameters().contains("blocks.1.connection.hc.router.window_logits"),
              true);
    if (kind == ResidualKind::kHC) {
      EXPECT_LE(max_abs(m->forward(ids) - before), 1e-4);
    }
    auto losses = train_steps(m, ids, 15);
    EXPECT_LT(losses.back(), 0.8 * losses.front());
    // KV-cached decoding runs through the injected blocks and equals the full forward (1e-4, the
    // bound of the model's own cache test).
    m->eval();
    torch::NoGradGuard g;
    auto full = m->forward(ids);
    KVCache cache(m->config(), 2, 12, torch::kFloat);
    auto first = m->forward_cached(ids.narrow(1, 0, 7), cache);
    auto rest = m->forward_cached(ids.narrow(1, 7, 5), cache);
    EXPECT_LE(max_abs(torch::cat({first, rest}, 1) - full), 1e-4);
    EXPECT_GT(max_abs(full - before), 1e-3) << "training changed the injected model";
  }
}

}  // namespace
}  // namespace shc
