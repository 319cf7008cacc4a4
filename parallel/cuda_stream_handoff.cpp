// The CUDA side of stream_handoff.h (CUDA lane only). Compiled and linked in CI; it has not run
// on a GPU yet: `shc selftest` checks it first on a machine with one.
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "parallel/stream_handoff.h"

namespace shc::parallel {
namespace {

class CudaStreamHandoff final : public StreamHandoff {
 public:
  CudaStreamHandoff(c10::Device device, std::size_t slots)
      : device_(device),
        side_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index())),
        ready_(slots),
        done_(slots) {}

  void produced(std::size_t slot) override {
    ready_.at(slot).record(c10::cuda::getCurrentCUDAStream(device_.index()));
  }

  void communicate(std::size_t slot, const std::function<void()>& collective) override {
    c10::cuda::CUDAStreamGuard guard(side_);  // also makes device_ current
    ready_.at(slot).block(side_);
    collective();
    done_.at(slot).record(side_);
  }

  void consumed(std::size_t slot) override {
    done_.at(slot).block(c10::cuda::getCurrentCUDAStream(device_.index()));
  }

 private:
  c10::Device device_;
  c10::cuda::CUDAStream side_;
  // Events without timing: the cheapest kind, only for ordering.
  std::vector<at::cuda::CUDAEvent> ready_, done_;
};

}  // namespace

std::unique_ptr<StreamHandoff> make_cuda_stream_handoff(c10::Device device, std::size_t slots) {
  return std::make_unique<CudaStreamHandoff>(device, slots);
}

}  // namespace shc::parallel
