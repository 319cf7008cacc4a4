// The rotary embedding's CPU kernel (core/rotary_embedding.h) against the composed reference:
// outputs and input gradients in fp64 (1e-12) and fp32 (1e-6), on the strided views attention
// passes (batch, heads, T, head_dim seen through a transpose), with head widths that fill no vector
// and several, cache offsets, bf16 inputs, thread counts, and the error for an odd head width.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "core/rotary_embedding.h"
#include "tests/kernel_test_util.h"

namespace shc {
namespace {

// x (batch, heads, T, head_dim) as attention makes it: a (batch, T, heads, head_dim) tensor
// transposed, so neither the head nor the position stride is the contiguous one.
torch::Tensor heads_view(int64_t b, int64_t h, int64_t t, int64_t hd, torch::Dtype dtype) {
  return torch::randn({b, t, h, hd}, dtype).transpose(1, 2);
}

void expect_kernel_equals_reference(torch::Dtype dtype, double tolerance) {
  for (int64_t head_dim : {6, 72}) {
    for (int64_t offset : {0, 5}) {
      const std::string what =
          "head_dim " + std::to_string(head_dim) + " offset " + std::to_string(offset);
      auto x = heads_view(2, 3, 7, head_dim, dtype).requires_grad_(true);
      auto w = torch::randn({2, 3, 7, head_dim}, dtype);
      auto y = apply_rotary(x, offset, 10000.0);
      EXPECT_EQ(y.scalar_type(), dtype) << what;
      test::expect_all_close(
          test::output_and_gradients(y, w, {x}),
          test::output_and_gradients(apply_rotary_reference(x, offset, 10000.0), w, {x}), tolerance,
          what);
    }
  }
}

TEST(RotaryEmbedding, KernelEqualsReferenceInFp64) {
  torch::manual_seed(1);
  expect_kernel_equals_reference(torch::kDouble, 1e-12);
}

TEST(RotaryEmbedding, KernelEqualsReferenceInFp32) {
  torch::manual_seed(2);
  expect_kernel_equals_reference(torch::kFloat, 1e-6);
}

// The gradient of y.sum() reaches backward expanded (every stride 0): it is rotated like any other.
TEST(RotaryEmbedding, ExpandedGradientEqualsReference) {
  torch::manual_seed(6);
  auto x = heads_view(2, 3, 5, 16, torch::kDouble).requires_grad_(true);
  auto grad = torch::autograd::grad({apply_rotary(x, 2, 10000.0).sum()}, {x})[0];
  auto grad_ref = torch::autograd::grad({apply_rotary_reference(x, 2, 10000.0).sum()}, {x})[0];
  EXPECT_TRUE(torch::allclose(grad, grad_ref, 1e-12, 1e-12));
}

// The rotation preserves each pair's norm, and position 0 is not rotated at all.
TEST(RotaryEmbedding, RotatesPairsWithoutChangingTheirNorm) {
  torch::manual_seed(3);
  auto x = heads_view(1, 2, 9, 16, torch::kDouble);
  auto y = apply_rotary(x, 0, 10000.0);
  auto pair_norms = [](const torch::Tensor& t) {
    return t.narrow(-1, 0, 8).pow(2) + t.narrow(-1, 8, 8).pow(2);
  };
  EXPECT_TRUE(torch::allclose(pair_norms(y), pair_norms(x), 1e-12, 1e-12));
  EXPECT_TRUE(torch::equal(y.select(2, 0), x.select(2, 0)));
  EXPECT_FALSE(torch::allclose(y.select(2, 1), x.select(2, 1)));
}

// bf16 inputs rotate in fp32 and come back as bf16, like the reference.
TEST(RotaryEmbedding, Bf16InputRotatesInFp32) {
  torch::manual_seed(4);
  auto x = heads_view(2, 2, 5, 32, torch::kBFloat16);
  auto y = apply_rotary(x, 3, 10000.0);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  auto reference = apply_rotary_reference(x, 3, 10000.0);
  EXPECT_TRUE(torch::allclose(y.to(torch::kFloat), reference.to(torch::kFloat), 1e-2, 1e-2));
}

// Enough rows (4096 positions x heads) that the kernel is threaded: one thread and three split the
// rows differently, and a row index taken relative to a thread's range would show here.
TEST(RotaryEmbedding, SameBitsOnAnyThreadCount) {
  torch::manual_seed(5);
  auto x = heads_view(2, 4, 512, 64, torch::kFloat).requires_grad_(true);
  auto w = torch::randn({2, 4, 512, 64});
  test::expect_same_bits_on_one_and_three_threads(
      [&] { return test::output_and_gradients(apply_rotary(x, 7, 10000.0), w, {x}); });
}

TEST(RotaryEmbedding, OddHeadWidthIsAnError) {
  test::expect_error(
      [] {
        apply_rotary(torch::randn({1, 2, 3, 5}), 0, 10000.0);
      },
      "apply_rotary: expected (batch, heads, T, even head_dim), got [1, 2, 3, 5]");
}

}  // namespace
}  // namespace shc
