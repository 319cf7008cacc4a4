// Hyper-connections as a library (SPEC §4.3, issue 12): the exact simplex projection, the
// `history` residual kind, the HyperConnections wrapper (disable, n = 1, frac-connections) and
// shc::inject on a small MLP and on SHCTransformer. Tolerances: "exact" means torch::equal (the
// same bits); otherwise the bound is given where it is checked and why.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "core/simplex_projection.h"

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

}  // namespace
}  // namespace shc
