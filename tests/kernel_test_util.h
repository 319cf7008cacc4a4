// Shared pieces of the CPU kernel tests: each hand-written kernel against its composed LibTorch
// reference, on one thread against three, and its error messages.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace shc::test {

// The LibTorch thread count for a scope; the previous count comes back on exit, also when a test
// assertion throws.
class ThreadCount {
 public:
  explicit ThreadCount(int threads) : previous_(torch::get_num_threads()) {
    torch::set_num_threads(threads);
  }
  ~ThreadCount() { torch::set_num_threads(previous_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int previous_;
};

// {y, d/d inputs of sum(y * w)...}, detached: an output and the gradients a cotangent w gives.
inline std::vector<torch::Tensor> output_and_gradients(const torch::Tensor& y,
                                                       const torch::Tensor& w,
                                                       const std::vector<torch::Tensor>& inputs) {
  auto grads = torch::autograd::grad({(y * w).sum()}, inputs);
  std::vector<torch::Tensor> out{y.detach()};
  out.insert(out.end(), grads.begin(), grads.end());
  return out;
}

// Each tensor of `a` within `tolerance` (relative and absolute) of the same one of `b`.
inline void expect_all_close(const std::vector<torch::Tensor>& a,
                             const std::vector<torch::Tensor>& b, double tolerance,
                             const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a[i], b[i], tolerance, tolerance)) << what << ", tensor " << i;
  }
}

// `run` on one thread and on three (an uneven split of the same work) gives the same bits.
inline void expect_same_bits_on_one_and_three_threads(
    const std::function<std::vector<torch::Tensor>()>& run) {
  std::vector<torch::Tensor> one, three;
  {
    ThreadCount threads(1);
    one = run();
  }
  {
    ThreadCount threads(3);
    three = run();
  }
  ASSERT_EQ(one.size(), three.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(torch::equal(one[i], three[i])) << "output " << i;
  }
}

// `f` throws a c10::Error whose message contains `message`.
inline void expect_error(const std::function<void()>& f, const std::string& message) {
  try {
    f();
    ADD_FAILURE() << "expected an error: " << message;
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find(message), std::string::npos)
        << e.what_without_backtrace();
  }
}

}  // namespace shc::test
