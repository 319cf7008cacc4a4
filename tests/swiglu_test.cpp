// SwiGLU's CPU kernel (core/swiglu.h) against the composed reference: outputs and the gradient of
// the whole gate/up projection in fp64 (1e-12) and fp32 (1e-6), with widths that fill no vector
// and several; the same bits on any thread count; the error for an odd width. And the lane-wise
// exp the kernel's sigmoid is built on (core/vector_lanes.h), against std::exp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/swiglu.h"
#include "core/vector_lanes.h"
#include "tests/kernel_test_util.h"

namespace shc {
namespace {

void expect_kernel_equals_reference(torch::Dtype dtype, double tolerance) {
  for (int64_t f : {5, 37, 64}) {
    // Gate values up to |g| ~ 40 reach both tails of the sigmoid.
    auto gate_up = (torch::randn({3, 7, 2 * f}, dtype) * 10).requires_grad_(true);
    auto w = torch::randn({3, 7, f}, dtype);
    test::expect_all_close(test::output_and_gradients(swiglu(gate_up), w, {gate_up}),
                           test::output_and_gradients(swiglu_reference(gate_up), w, {gate_up}),
                           tolerance, "F = " + std::to_string(f));
  }
}

TEST(SwiGLU, KernelEqualsReferenceInFp64) {
  torch::manual_seed(1);
  expect_kernel_equals_reference(torch::kDouble, 1e-12);
}

TEST(SwiGLU, KernelEqualsReferenceInFp32) {
  torch::manual_seed(2);
  expect_kernel_equals_reference(torch::kFloat, 1e-6);
}

// One thread and three split the rows differently: a row index taken relative to a thread's range
// would show here.
TEST(SwiGLU, SameBitsOnAnyThreadCount) {
  torch::manual_seed(3);
  auto gate_up = torch::randn({4096, 2 * 48}).requires_grad_(true);
  auto w = torch::randn({4096, 48});
  test::expect_same_bits_on_one_and_three_threads(
      [&] { return test::output_and_gradients(swiglu(gate_up), w, {gate_up}); });
}

TEST(SwiGLU, OddWidthIsAnError) {
  test::expect_error(
      [] {
        swiglu(torch::randn({2, 7}));
      },
      "swiglu: expected (..., 2F) gate and up projections, got [2, 7]");
}

// Relative error of the lane-wise exp over [lo, hi] (and at 0 and the reduction's edges) against
// std::exp in long double.
template <typename T>
double exp_relative_error(T lo, T hi) {
  constexpr int64_t lanes = kernels::kLanes<T>;
  std::vector<T> x(4096 * lanes);
  for (size_t i = 0; i < x.size(); ++i) x[i] = lo + (hi - lo) * T(i) / T(x.size() - 1);
  x[0] = 0;
  x[1] = T(0.34657359);
  x[2] = T(-0.34657359);
  double worst = 0;
  for (size_t i = 0; i < x.size(); i += lanes) {
    T y[lanes];
    kernels::store(y, kernels::exp<T>(kernels::load(x.data() + i)));
    for (int64_t l = 0; l < lanes; ++l) {
      const long double exact = std::exp(static_cast<long double>(x[i + l]));
      worst = std::max(worst, static_cast<double>(std::abs((y[l] - exact) / exact)));
    }
  }
  return worst;
}

TEST(VectorExp, MatchesStdExpOverTheFiniteRange) {
  EXPECT_LT(exp_relative_error<float>(-87.0f, 88.0f), 2.5e-7);  // ~2 ulp
  EXPECT_LT(exp_relative_error<double>(-700.0, 700.0), 1e-14);
  // Outside, the input is clamped: finite, never 0 or inf; NaN stays NaN.
  float big[16] = {-1000, 1000, -88.5f, 88.5f, std::nanf("")};
  float out[16];
  kernels::store(out, kernels::exp<float>(kernels::load(big)));
  EXPECT_GT(out[0], 0);
  EXPECT_TRUE(std::isfinite(out[1]));
  EXPECT_GT(out[2], 0);
  EXPECT_TRUE(std::isfinite(out[3]));
  EXPECT_TRUE(std::isnan(out[4]));
  double wide[8] = {-1e4, 1e4, std::nan("")};
  double wide_out[8];
  kernels::store(wide_out, kernels::exp<double>(kernels::load(wide)));
  EXPECT_GT(wide_out[0], 0);
  EXPECT_TRUE(std::isfinite(wide_out[1]));
  EXPECT_TRUE(std::isnan(wide_out[2]));
}

}  // namespace
}  // namespace shc
