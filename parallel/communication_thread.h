// The communication of DDP and FSDP (SPEC §5; c10d's reducer thread, FSDP2's all-gather and
// reduce-scatter streams): a thread that issues queued collectives one after the other on a
// communicator of its own, while the thread that queued them computes. Every rank queues the same
// collectives in the same order and the thread issues them in that order (FIFO), which is what a
// Communicator requires; it serves this thread only. Once an op has thrown, the thread's group may
// be out of step with its peers, so it issues nothing more: every later op fails with the first
// one's exception (DDP and FSDP rethrow it on the training thread; the job then ends, abort.h).
//
// On a CUDA communicator the thread issues on a side stream: an op first waits for an event that
// submit() recorded on the caller's current stream (its inputs are written), and Handle::wait()
// makes the caller's current stream wait for an event recorded after the op, so the host blocks
// only until the op is issued, never until the device finishes it. The op's buffers are marked as
// used on the side stream (recordStream), so the caching allocator does not hand their memory out
// again before the side stream is done with them.
#pragma once

#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "parallel/communicator.h"

namespace shc::parallel {

class CommunicationThread {
 public:
  struct StreamHandOff;  // the CUDA events of one op (a CUDA communicator only)
  struct Timers;         // busy and waited seconds

  class Handle {
   public:
    bool valid() const { return issued_.valid(); }
    // Returns once the op is issued (rethrowing its exception); from then on its results may be
    // used on the caller's current stream.
    void wait() const;

   private:
    friend class CommunicationThread;
    std::shared_future<void> issued_;
    std::shared_ptr<StreamHandOff> hand_off_;
    std::shared_ptr<Timers> timers_;
  };
  using Op = std::function<void(Communicator&)>;

  // `comm` must serve only this thread: e.g. shard_comm.split(0, shard_comm.rank()).
  explicit CommunicationThread(std::unique_ptr<Communicator> comm);
  // Ops not started yet are abandoned (their handles throw); the running one completes.
  ~CommunicationThread();
  CommunicationThread(const CommunicationThread&) = delete;
  CommunicationThread& operator=(const CommunicationThread&) = delete;

  // Queues `op` after every op queued before. `buffers`: the tensors it reads or writes.
  Handle submit(std::vector<at::Tensor> buffers, Op op);

  // Seconds the thread spent issuing ops (on the CPU: the collectives themselves), and seconds
  // callers spent blocked in Handle::wait(): 1 - waited / busy is the share of communication
  // hidden behind computation. On GPUs both are host times (issuing, not the kernels).
  double busy_seconds() const;
  double waited_seconds() const;
  void reset_timers();

 private:
  struct Task {
    std::vector<at::Tensor> buffers;
    Op op;
    std::promise<void> issued;
    std::shared_ptr<StreamHandOff> hand_off;
  };
  void loop();

  std::unique_ptr<Communicator> comm_;
  std::shared_ptr<Timers> timers_;
  std::mutex mutex_;
  std::condition_variable queued_;
  std::deque<Task> queue_;
  bool stop_ = false;
  std::exception_ptr failure_;  // the first op's exception; touched by the thread only
  std::thread thread_;
};

}  // namespace shc::parallel
