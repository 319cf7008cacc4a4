#include "parallel/communication_thread.h"

#include <chrono>
#include <mutex>
#include <optional>
#include <stdexcept>

#ifdef SHC_WITH_NCCL
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace shc::parallel {

#ifdef SHC_WITH_NCCL
struct CommunicationThread::StreamHandOff {
  c10::DeviceIndex device;
  at::cuda::CUDAEvent inputs_ready, done;
};
#else
struct CommunicationThread::StreamHandOff {};
#endif

struct CommunicationThread::Timers {
  std::mutex mutex;
  double busy = 0, waited = 0;
  void add(double& counter, std::chrono::steady_clock::time_point since) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
    std::lock_guard<std::mutex> lock(mutex);
    counter += seconds;
  }
};

namespace {

// Per op on a CUDA communicator: waits for the caller's inputs on the side stream, runs the op
// there, and marks its buffers and the end of the op. Elsewhere: runs the op.
class SideStream {
 public:
  explicit SideStream(c10::Device device)
#ifdef SHC_WITH_NCCL
      : stream_(device.is_cuda() ? std::make_optional(c10::cuda::getStreamFromPool(
                                       /*isHighPriority=*/true, device.index()))
                                 : std::nullopt)
#endif
  {
    (void)device;
  }

  void run(const std::vector<at::Tensor>& buffers, const CommunicationThread::Op& op,
           Communicator& comm, CommunicationThread::StreamHandOff* hand_off) {
#ifdef SHC_WITH_NCCL
    if (stream_) {
      c10::cuda::CUDAStreamGuard guard(*stream_);
      hand_off->inputs_ready.block(*stream_);
      // Before the op: if it throws after enqueueing work, the buffers are still covered.
      for (const auto& b : buffers) {
        c10::cuda::CUDACachingAllocator::recordStream(b.storage().data_ptr(), *stream_);
      }
      op(comm);
      hand_off->done.record(*stream_);
      return;
    }
#endif
    (void)buffers;
    (void)hand_off;
    op(comm);
  }

 private:
#ifdef SHC_WITH_NCCL
  std::optional<c10::cuda::CUDAStream> stream_;
#endif
};

}  // namespace

void CommunicationThread::Handle::wait() const {
  const auto start = std::chrono::steady_clock::now();
  issued_.wait();
  timers_->add(timers_->waited, start);
  issued_.get();
#ifdef SHC_WITH_NCCL
  if (hand_off_) hand_off_->done.block(c10::cuda::getCurrentCUDAStream(hand_off_->device));
#endif
}

CommunicationThread::CommunicationThread(std::unique_ptr<Communicator> comm)
    : comm_(std::move(comm)), timers_(std::make_shared<Timers>()), thread_([this] { loop(); }) {}

double CommunicationThread::busy_seconds() const {
  std::lock_guard<std::mutex> lock(timers_->mutex);
  return timers_->busy;
}

double CommunicationThread::waited_seconds() const {
  std::lock_guard<std::mutex> lock(timers_->mutex);
  return timers_->waited;
}

void CommunicationThread::reset_timers() {
  std::lock_guard<std::mutex> lock(timers_->mutex);
  timers_->busy = timers_->waited = 0;
}

CommunicationThread::~CommunicationThread() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  queued_.notify_all();
  thread_.join();
}

CommunicationThread::Handle CommunicationThread::submit(std::vector<at::Tensor> buffers, Op op) {
  Task task{std::move(buffers), std::move(op), {}, nullptr};
#ifdef SHC_WITH_NCCL
  const auto device = comm_->device();
  if (device.is_cuda()) {
    task.hand_off = std::make_shared<StreamHandOff>();
    task.hand_off->device = device.index();
    task.hand_off->inputs_ready.record(c10::cuda::getCurrentCUDAStream(device.index()));
  }
#endif
  Handle handle;
  handle.issued_ = task.issued.get_future().share();
  handle.hand_off_ = task.hand_off;
  handle.timers_ = timers_;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(task));
  }
  queued_.notify_one();
  return handle;
}

void CommunicationThread::loop() {
#ifdef SHC_WITH_NCCL
  std::optional<c10::cuda::CUDAGuard> device_guard;
  if (comm_->device().is_cuda()) device_guard.emplace(comm_->device());
#endif
  SideStream side(comm_->device());
  for (;;) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      queued_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) {
        for (auto& abandoned : queue_) {
          abandoned.issued.set_exception(std::make_exception_ptr(
              std::runtime_error("communication thread stopped before issuing this collective")));
        }
        return;
      }
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    if (failure_) {
      task.issued.set_exception(failure_);
      continue;
    }
    try {
      const auto start = std::chrono::steady_clock::now();
      side.run(task.buffers, task.op, *comm_, task.hand_off.get());
      timers_->add(timers_->busy, start);
      task.issued.set_value();
    } catch (...) {
      failure_ = std::current_exception();
      task.issued.set_exception(failure_);
    }
  }
}

}  // namespace shc::parallel
