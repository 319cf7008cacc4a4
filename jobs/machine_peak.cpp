#include "jobs/machine_peak.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <stdexcept>

namespace shc::jobs {

namespace {

// Best wall time of `fn` over `repeats` runs after one warm-up, in seconds.
template <typename Fn>
double best_seconds(int repeats, c10::Device device, Fn&& fn) {
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  fn();
  sync();
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < std::max(repeats, 1); ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    sync();
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

GemmPeak measure_gemm_peak(int64_t size, int repeats, c10::Device device) {
  if (size < 1) throw std::invalid_argument("GEMM size must be positive");
  torch::NoGradGuard no_grad;
  auto options = torch::TensorOptions().dtype(torch::kFloat).device(device);
  auto a = torch::randn({size, size}, options), b = torch::randn({size, size}, options);
  auto c = torch::empty({size, size}, options);
  const double seconds = best_seconds(repeats, device, [&] { torch::mm_out(c, a, b); });
  return {size, 2.0 * double(size) * double(size) * double(size) / seconds / 1e9};
}

CopyBandwidth measure_copy_bandwidth(int64_t bytes, int repeats, c10::Device device) {
  if (bytes < 4) throw std::invalid_argument("copy size must be at least 4 bytes");
  torch::NoGradGuard no_grad;
  auto options = torch::TensorOptions().dtype(torch::kFloat).device(device);
  auto src = torch::full({bytes / 4}, 1.0, options), dst = torch::zeros({bytes / 4}, options);
  const double seconds = best_seconds(repeats, device, [&] { dst.copy_(src); });
  return {bytes, 2.0 * double(bytes / 4 * 4) / seconds / 1e9};
}

}  // namespace shc::jobs
