// The NCCL backend of Communicator (builds with SHC_WITH_CUDA only): CUDA tensors of one device,
// NCCL collectives enqueued on the current CUDA stream of that device, so they order with the
// computation around them like any other kernel. Thin on purpose: checks, kAvg, sequence numbers
// and the watchdog live in Communicator and are shared with the MPI backend.
//
// The group also keeps an MPI communicator: rank 0's ncclUniqueId travels over it, and the
// watchdog's side channel runs on it. A collective counts as finished for the watchdog when a
// CUDA event recorded after it on the stream has completed.
//
// Failure (SPEC §5): the watchdog polls ncclCommGetAsyncError (async_error()); a timeout, an async
// error or any fatal error of the job (abort_job, abort.h) aborts the NCCL communicator with
// ncclCommAbort before MPI_Abort ends the ranks. The destructor never calls ncclCommDestroy while
// an exception unwinds or the communicator has an error: an operation may still be in flight
// (waiting for a peer that will never come), and ncclCommDestroy would wait for it.
#pragma once

#include <mpi.h>
#include <nccl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "parallel/communicator.h"

namespace shc::parallel {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `parent` (duplicated for the MPI side); `device` is a CUDA device with index.
  NcclCommunicator(MPI_Comm parent, c10::Device device, WatchdogOptions options);
  ~NcclCommunicator() override;

  std::string backend() const override { return "nccl"; }
  c10::Device device() const override { return device_; }

 protected:
  Completion do_all_reduce_sum(const at::Tensor& tensor) override;
  Completion do_reduce_scatter_sum(const at::Tensor& input, const at::Tensor& output) override;
  Completion do_all_gather(const at::Tensor& input, const at::Tensor& output) override;
  Completion do_broadcast(const at::Tensor& tensor, int root) override;
  Completion do_barrier() override;
  std::unique_ptr<Communicator> do_split(int color, int key) override;
  std::string async_error() override;

 private:
  struct Adopt {};
  // Takes ownership of both handles (of the same group, same rank order).
  NcclCommunicator(Adopt, MPI_Comm mpi, ncclComm_t nccl, c10::Device device,
                   WatchdogOptions options);

  // The NCCL communicator as the abort hook sees it: null once aborted or destroyed.
  struct Handle {
    std::mutex mutex;
    ncclComm_t comm = nullptr;
  };

  MPI_Comm mpi_;
  ncclComm_t nccl_;
  c10::Device device_;
  std::shared_ptr<Handle> handle_;
  std::uint64_t abort_hook_ = 0;
};

}  // namespace shc::parallel
