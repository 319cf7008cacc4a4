#include "parallel/stream_handoff.h"

#include <stdexcept>

namespace shc::parallel {

#ifdef SHC_WITH_NCCL
// cuda_stream_handoff.cpp, compiled in the CUDA lane only.
std::unique_ptr<StreamHandoff> make_cuda_stream_handoff(c10::Device device, std::size_t slots);
#endif

namespace {

class HostStreamHandoff final : public StreamHandoff {
 public:
  void produced(std::size_t) override {}
  void communicate(std::size_t, const std::function<void()>& collective) override { collective(); }
  void consumed(std::size_t) override {}
};

}  // namespace

std::unique_ptr<StreamHandoff> make_stream_handoff(c10::Device device, std::size_t slots) {
  if (device.is_cpu()) return std::make_unique<HostStreamHandoff>();
#ifdef SHC_WITH_NCCL
  if (device.is_cuda()) return make_cuda_stream_handoff(device, slots);
#endif
  throw std::invalid_argument("stream hand-off: no implementation for device " + device.str() +
                              " in this build");
}

}  // namespace shc::parallel
