// Data parallelism (SPEC §5, in the manner of PyTorch DDP, Li et al. 2020): every rank holds the
// whole model; gradients are flattened into buckets of ~bucket_mb in reverse registration order
// (roughly the order backward produces them) and each bucket is all-reduced (averaged) by a
// communication thread as soon as its last gradient arrives, so communication overlaps the rest
// of backward. During gradient accumulation `set_sync(false)` keeps gradients local (no_sync);
// the backward with sync on reduces the accumulated total.
//
// Buckets are all-reduced strictly in bucket order, as c10d's reducer does: a bucket that is ready
// waits for its predecessors. Ranks whose gradients arrive in different orders (a parameter unused
// on one rank, data-dependent paths) therefore still reduce the same bucket together; a bucket
// whose gradients never all arrive is reduced by finish_gradient_sync(), after the backward.
// On GPUs the buckets are reduced on a side stream that waits for an event recorded after their
// gradients were written (stream_handoff.h), so backward kernels never queue behind communication.
// A failure of the communication thread is not lost: finish_gradient_sync() rethrows it on the
// calling thread (the job then ends every rank, abort.h).
#pragma once

#include <torch/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/stream_handoff.h"

namespace shc::parallel {

class DistributedDataParallel {
 public:
  // `parameters` in registration order (Module::parameters()), on comm.device(); `comm` must
  // outlive this object and carry no other collective while a backward with sync on is in flight.
  // std::invalid_argument for a parameter on another device.
  DistributedDataParallel(std::vector<torch::Tensor> parameters, Communicator& comm,
                          double bucket_mb = 25.0);
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // Makes every rank's parameters equal to `root`'s (call once after construction).
  void broadcast_parameters(int root = 0);
  // Whether the next backward passes reduce gradients (false = no_sync, for accumulation).
  void set_sync(bool sync);
  // After a backward with sync on: waits for every bucket (launching any whose gradients never
  // arrived, e.g. unused parameters) and writes the averaged gradients into .grad. Rethrows an
  // exception of the communication thread.
  void finish_gradient_sync();

  size_t num_buckets() const { return buckets_.size(); }
  // Seconds the communication thread spent in all-reduce, and seconds finish_gradient_sync()
  // waited for it: 1 - wait / comm is the fraction of communication hidden behind backward. (On
  // GPUs these are host times: enqueueing, not the kernels.)
  double comm_seconds() const { return comm_seconds_; }
  double wait_seconds() const { return wait_seconds_; }
  void reset_timers() { comm_seconds_ = wait_seconds_ = 0; }

 private:
  struct Bucket {
    std::vector<size_t> params;    // indices into parameters_
    std::vector<int64_t> offsets;  // of each parameter in `flat`
    torch::Tensor flat;            // the parameters' dtype, sum of numels, from comm.empty()
    size_t pending = 0;            // gradients still to arrive this step
    bool done = false;
  };
  void on_gradient(size_t param, const torch::Tensor& grad);
  // Queues every bucket from next_launch_ on whose gradients are complete, in order, stopping at
  // the first that is not. Caller holds mutex_.
  void launch_ready();
  void communication_loop();

  std::vector<torch::Tensor> parameters_;
  std::vector<unsigned> hooks_;
  std::vector<size_t> bucket_of_, slot_of_;
  std::vector<Bucket> buckets_;
  Communicator& comm_;
  std::unique_ptr<StreamHandoff> handoff_;  // one slot per bucket
  bool sync_ = true;

  std::mutex mutex_;
  std::condition_variable queue_cv_, done_cv_;
  std::deque<size_t> queue_;
  size_t next_launch_ = 0;      // buckets before it are queued (or reduced) this step
  std::exception_ptr failure_;  // the communication thread's exception, if any
  bool stop_ = false;
  std::thread thread_;
  double comm_seconds_ = 0, wait_seconds_ = 0;
};

}  // namespace shc::parallel
