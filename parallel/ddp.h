// Data parallelism (SPEC §5, in the manner of PyTorch DDP, Li et al. 2020): every rank holds the
// whole model; gradients are flattened into buckets of ~bucket_mb in reverse registration order
// (roughly the order backward produces them) and each bucket is all-reduced (averaged) on a
// communication thread (communication_thread.h) as soon as its last gradient arrives, so
// communication overlaps the rest of backward. During gradient accumulation `set_sync(false)`
// keeps gradients local (no_sync); the backward with sync on reduces the accumulated total.
//
// Buckets are all-reduced strictly in bucket order, as c10d's reducer does: a bucket that is ready
// waits for its predecessors. Ranks whose gradients arrive in different orders (a parameter unused
// on one rank, data-dependent paths) therefore still reduce the same bucket together; a bucket
// whose gradients never all arrive is reduced by finish_gradient_sync(), after the backward.
// On GPUs the thread reduces on a side stream that waits for an event recorded after the bucket's
// gradients were written, so backward kernels never queue behind communication. A failure of the
// communication thread is not lost: finish_gradient_sync() rethrows it on the calling thread (the
// job then ends every rank, abort.h).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "parallel/communication_thread.h"
#include "parallel/communicator.h"

namespace shc::parallel {

class DistributedDataParallel {
 public:
  // `parameters` in registration order (Module::parameters()), on comm.device(). Collective over
  // `comm`, which it splits for its communication thread; `comm` must outlive this object.
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
  // GPUs these are host times: issuing, not the kernels.)
  double comm_seconds() const { return thread_.busy_seconds(); }
  double wait_seconds() const { return thread_.waited_seconds(); }
  void reset_timers() { thread_.reset_timers(); }

 private:
  struct Bucket {
    std::vector<size_t> params;           // indices into parameters_
    std::vector<int64_t> offsets;         // of each parameter in `flat`
    torch::Tensor flat;                   // the parameters' dtype, sum of numels, from comm.empty()
    size_t pending = 0;                   // gradients still to arrive this step
    CommunicationThread::Handle reduced;  // valid once launched this step
  };
  void on_gradient(size_t param, const torch::Tensor& grad);
  // Submits every bucket from next_launch_ on whose gradients are complete, in order, stopping at
  // the first that is not. Caller holds mutex_.
  void launch_ready();

  std::vector<torch::Tensor> parameters_;
  std::vector<unsigned> hooks_;
  std::vector<size_t> bucket_of_, slot_of_;
  std::vector<Bucket> buckets_;
  Communicator& comm_;
  bool sync_ = true;

  std::mutex mutex_;            // guards the buckets' pending counts and next_launch_
  size_t next_launch_ = 0;      // buckets before it are submitted this step
  CommunicationThread thread_;  // last: stopped before the buckets it reduces go away
};

}  // namespace shc::parallel
