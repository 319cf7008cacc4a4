#include "parallel/nccl_communicator.h"

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <exception>
#include <stdexcept>

#include "parallel/abort.h"
#include "parallel/mpi_util.h"

namespace shc::parallel {
namespace {

void check_nccl(ncclResult_t result, const char* call, ncclComm_t comm = nullptr) {
  if (result == ncclSuccess) return;
  std::string message = std::string(call) + " failed: " + ncclGetErrorString(result);
  const char* detail = ncclGetLastError(comm);
  if (detail != nullptr && *detail != '\0') message += std::string(" (") + detail + ")";
  throw std::runtime_error(message);
}

ncclDataType_t nccl_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kHalf:
      return ncclFloat16;
    case at::kInt:
      return ncclInt32;
    case at::kLong:
      return ncclInt64;
    default:
      throw std::invalid_argument("nccl backend: unsupported dtype " +
                                  std::string(c10::toString(type)));
  }
}

// The watchdog's view of an enqueued collective: finished once an event recorded right after it
// on the same stream has completed. The query runs on the watchdog's thread, whose current device
// is 0 unless set: without the guard every rank would create a CUDA context on GPU 0 (~0.5 GiB
// each), or fail outright on GPUs in exclusive-process mode.
Watchdog::DoneFn finished_when_stream_reaches_here(const c10::cuda::CUDAStream& stream) {
  auto event = std::make_shared<at::cuda::CUDAEvent>(cudaEventDisableTiming);
  event->record(stream);
  return [event, device = stream.device_index()] {
    c10::cuda::CUDAGuard guard(device);
    return event->query();
  };
}

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm parent, c10::Device device, WatchdogOptions options)
    : NcclCommunicator(Adopt{}, detail::duplicate(parent), nullptr, device, options) {}

NcclCommunicator::NcclCommunicator(Adopt, MPI_Comm mpi, ncclComm_t nccl, c10::Device device,
                                   WatchdogOptions options)
    : Communicator(detail::comm_rank(mpi), detail::comm_size(mpi), options),
      mpi_(mpi),
      nccl_(nccl),
      device_(device) {
  if (!device_.is_cuda() || !device_.has_index()) {
    throw std::invalid_argument("nccl backend: needs a CUDA device with an index, got " +
                                device_.str());
  }
  // Whichever comes first, the job's abort or the destructor, ends the NCCL communicator; the
  // other finds it gone (the hook may still run after remove_abort_hook, from a copy of the
  // list). The watchdog's async_error() reads it too, from its thread.
  handle_ = std::make_shared<Handle>();
  handle_->comm = nccl_;
  start_watchdog(mpi_);
  if (nccl_ == nullptr) {
    try {
      // Watched: a rank that never gets here would leave the others in ncclCommInitRank for ever.
      run_watched("nccl_init", [&] {
        // Rank 0 creates the group's id; MPI carries it to the others.
        ncclUniqueId id;
        if (rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
        detail::check_mpi(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, mpi_),
                          "MPI_Bcast (ncclUniqueId)");
        c10::cuda::CUDAGuard guard(device_);
        check_nccl(ncclCommInitRank(&nccl_, size(), id, rank()), "ncclCommInitRank");
        std::lock_guard<std::mutex> lock(handle_->mutex);
        handle_->comm = nccl_;
      });
    } catch (...) {
      stop_watchdog();  // its thread reads this object, whose destructor will not run
      detail::free_comm(mpi_);
      throw;
    }
  }
  abort_hook_ = add_abort_hook([handle = handle_] {
    std::lock_guard<std::mutex> lock(handle->mutex);
    if (handle->comm != nullptr) ncclCommAbort(handle->comm);
    handle->comm = nullptr;
  });
}

NcclCommunicator::~NcclCommunicator() {
  stop_watchdog();
  remove_abort_hook(abort_hook_);
  {
    std::lock_guard<std::mutex> lock(handle_->mutex);
    if (handle_->comm != nullptr) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(nccl_, &async);
      if (std::uncaught_exceptions() > 0 || async != ncclSuccess) {
        ncclCommAbort(nccl_);
      } else {
        ncclCommDestroy(nccl_);
      }
      handle_->comm = nullptr;
    }
  }
  detail::free_comm(mpi_);
}

std::string NcclCommunicator::async_error() {
  std::lock_guard<std::mutex> lock(handle_->mutex);
  if (handle_->comm == nullptr) return {};  // not created yet, or already ended
  ncclResult_t async = ncclSuccess;
  const ncclResult_t result = ncclCommGetAsyncError(handle_->comm, &async);
  if (result != ncclSuccess) {
    return std::string("ncclCommGetAsyncError failed: ") + ncclGetErrorString(result);
  }
  if (async == ncclSuccess || async == ncclInProgress) return {};
  std::string message = std::string("NCCL asynchronous error: ") + ncclGetErrorString(async);
  const char* detail = ncclGetLastError(handle_->comm);
  if (detail != nullptr && *detail != '\0') message += std::string(" (") + detail + ")";
  return message;
}

NcclCommunicator::Completion NcclCommunicator::do_all_reduce_sum(const at::Tensor& tensor) {
  c10::cuda::CUDAGuard guard(device_);
  const auto stream = c10::cuda::getCurrentCUDAStream(device_.index());
  check_nccl(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(),
                           nccl_type(tensor.scalar_type()), ncclSum, nccl_, stream.stream()),
             "ncclAllReduce", nccl_);
  return finished_when_stream_reaches_here(stream);
}

NcclCommunicator::Completion NcclCommunicator::do_reduce_scatter_sum(const at::Tensor& input,
                                                                     const at::Tensor& output) {
  c10::cuda::CUDAGuard guard(device_);
  const auto stream = c10::cuda::getCurrentCUDAStream(device_.index());
  check_nccl(ncclReduceScatter(input.data_ptr(), output.data_ptr(), output.numel(),
                               nccl_type(input.scalar_type()), ncclSum, nccl_, stream.stream()),
             "ncclReduceScatter", nccl_);
  return finished_when_stream_reaches_here(stream);
}

NcclCommunicator::Completion NcclCommunicator::do_all_gather(const at::Tensor& input,
                                                             const at::Tensor& output) {
  // In place (input == output's chunk rank()) is NCCL's own in-place convention.
  c10::cuda::CUDAGuard guard(device_);
  const auto stream = c10::cuda::getCurrentCUDAStream(device_.index());
  check_nccl(ncclAllGather(input.data_ptr(), output.data_ptr(), input.numel(),
                           nccl_type(input.scalar_type()), nccl_, stream.stream()),
             "ncclAllGather", nccl_);
  return finished_when_stream_reaches_here(stream);
}

NcclCommunicator::Completion NcclCommunicator::do_broadcast(const at::Tensor& tensor, int root) {
  c10::cuda::CUDAGuard guard(device_);
  const auto stream = c10::cuda::getCurrentCUDAStream(device_.index());
  check_nccl(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), tensor.numel(),
                           nccl_type(tensor.scalar_type()), root, nccl_, stream.stream()),
             "ncclBroadcast", nccl_);
  return finished_when_stream_reaches_here(stream);
}

NcclCommunicator::Completion NcclCommunicator::do_barrier() {
  // NCCL has no barrier: a one-element all-reduce, then the host waits for it, so that returning
  // means every rank got this far (the watchdog covers the wait).
  c10::cuda::CUDAGuard guard(device_);
  const auto stream = c10::cuda::getCurrentCUDAStream(device_.index());
  at::Tensor token = at::zeros({1}, at::TensorOptions().device(device_).dtype(at::kFloat));
  check_nccl(ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclFloat32, ncclSum, nccl_,
                           stream.stream()),
             "ncclAllReduce (barrier)", nccl_);
  stream.synchronize();
  return {};
}

std::unique_ptr<Communicator> NcclCommunicator::do_split(int color, int key) {
  // Both splits order the members by (key, rank here), so the MPI and NCCL groups agree.
  MPI_Comm child_mpi = MPI_COMM_NULL;
  detail::check_mpi(MPI_Comm_split(mpi_, color, key, &child_mpi), "MPI_Comm_split");
  MPI_Comm_set_errhandler(child_mpi, MPI_ERRORS_RETURN);
  ncclComm_t child_nccl = nullptr;
  c10::cuda::CUDAGuard guard(device_);
  check_nccl(ncclCommSplit(nccl_, color, key, &child_nccl, nullptr), "ncclCommSplit", nccl_);
  return std::unique_ptr<Communicator>(
      new NcclCommunicator(Adopt{}, child_mpi, child_nccl, device_, watchdog_options()));
}

}  // namespace shc::parallel
