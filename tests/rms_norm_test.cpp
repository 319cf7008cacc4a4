// RMSNorm's CPU kernel (core/rms_norm.h) against the composed reference: output and the gradients
// of input and gain in fp64 (1e-12) and fp32 (1e-5), with widths that fill no vector and several
// and enough rows that the gain's gradient sums several chunks; the same bits on any thread
// count; bf16 input normalised in fp32 and returned as bf16; non-contiguous input; the error for
// a gain of the wrong size.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "core/rms_norm.h"
#include "tests/kernel_test_util.h"

namespace shc {
namespace {

void expect_kernel_equals_reference(torch::Dtype dtype, double tolerance) {
  for (int64_t d : {37, 128}) {
    // 2 x 300 rows: three chunks of the gain's partial sums, the last one short.
    auto x = (torch::randn({2, 300, d}, dtype) * 3).requires_grad_(true);
    auto weight = (torch::rand({d}, dtype) + 0.5).requires_grad_(true);
    auto w = torch::randn({2, 300, d}, dtype);
    test::expect_all_close(
        test::output_and_gradients(rms_norm(x, weight, 1e-6), w, {x, weight}),
        test::output_and_gradients(rms_norm_reference(x, weight, 1e-6), w, {x, weight}), tolerance,
        "d = " + std::to_string(d));
  }
}

TEST(RMSNormKernel, EqualsReferenceInFp64) {
  torch::manual_seed(1);
  expect_kernel_equals_reference(torch::kDouble, 1e-12);
}

TEST(RMSNormKernel, EqualsReferenceInFp32) {
  torch::manual_seed(2);
  expect_kernel_equals_reference(torch::kFloat, 1e-5);
}

TEST(RMSNormKernel, SameBitsOnAnyThreadCount) {
  torch::manual_seed(3);
  auto x = torch::randn({3000, 96}).requires_grad_(true);
  auto weight = torch::rand({96}).requires_grad_(true);
  auto w = torch::randn({3000, 96});
  test::expect_same_bits_on_one_and_three_threads([&] {
    return test::output_and_gradients(rms_norm(x, weight, 1e-6), w, {x, weight});
  });
}

TEST(RMSNormKernel, Bf16InputIsNormalisedInFp32) {
  torch::manual_seed(4);
  auto x = torch::randn({4, 64}).to(torch::kBFloat16);
  auto weight = torch::rand({64});
  auto y = rms_norm(x, weight, 1e-6);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::allclose(y.to(torch::kFloat),
                              rms_norm_reference(x, weight, 1e-6).to(torch::kFloat), 1e-2, 1e-2));
}

// A transposed (non-contiguous) input normalises its last dimension like the reference.
TEST(RMSNormKernel, NonContiguousInputEqualsReference) {
  torch::manual_seed(5);
  auto x = torch::randn({48, 3}, torch::kDouble).t();  // (3, 48), last-dimension stride 3
  auto weight = torch::rand({48}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(rms_norm(x, weight, 1e-6), rms_norm_reference(x, weight, 1e-6), 1e-12,
                              1e-12));
}

// A gain that is not one value per feature is an error (the kernel would read past it).
TEST(RMSNormKernel, GainOfTheWrongSizeIsAnError) {
  test::expect_error(
      [] {
        rms_norm(torch::randn({4, 64}), torch::ones({1}), 1e-6);
      },
      "rms_norm: the gain must be one value per feature of x, on x's device; got x "
      "[4, 64] on cpu and gain [1] on cpu");
}

}  // namespace
}  // namespace shc
