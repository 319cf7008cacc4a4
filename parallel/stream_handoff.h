// Ordering between the compute stream and a communication stream (SPEC §5 overlap), in the manner
// of c10d's ProcessGroupNCCL: a buffer that the compute stream produces is marked with an event
// recorded there; the communication thread runs its collective on a side stream that first waits
// for that event, and records a done event after it; the consumer of the result makes its own
// current stream wait for the done event. So backward kernels are never queued behind
// communication, and no host thread blocks on the GPU to hand a buffer over. On the CPU every
// step is a no-op: MPI collectives have completed when they return.
//
// Slots name the buffers (DDP: one per gradient bucket). produced() and consumed() run on the
// compute side (any thread whose current stream is the compute stream); communicate() on the
// communication thread. A slot's calls happen in the order produced -> communicate -> consumed,
// made visible to each other by the caller's own synchronisation (DDP's mutex).
#pragma once

#include <c10/core/Device.h>

#include <cstddef>
#include <functional>
#include <memory>

namespace shc::parallel {

class StreamHandoff {
 public:
  virtual ~StreamHandoff() = default;
  // After the kernels writing slot's buffer were enqueued on the current stream.
  virtual void produced(std::size_t slot) = 0;
  // Runs `collective` with the side stream current, after slot's producer; the side stream then
  // marks slot done.
  virtual void communicate(std::size_t slot, const std::function<void()>& collective) = 0;
  // Before the current stream reads slot's result.
  virtual void consumed(std::size_t slot) = 0;
};

// For `slots` buffers on `device`: a no-op on the CPU; CUDA events and a side stream from the
// pool on a CUDA device (builds with SHC_WITH_CUDA; std::invalid_argument otherwise).
std::unique_ptr<StreamHandoff> make_stream_handoff(c10::Device device, std::size_t slots);

}  // namespace shc::parallel
