#include "parallel/mpi_communicator.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <stdexcept>

#include "parallel/mpi_util.h"

namespace shc::parallel {
namespace {

using detail::check_mpi;
using detail::comm_size;

std::atomic<std::int64_t> max_count{INT_MAX};

// The MPI type that moves one element. bfloat16/float16 travel as 16-bit integers: right for
// copies, never used for sums (see fp32_sum()).
MPI_Datatype transfer_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return MPI_FLOAT;
    case at::kDouble:
      return MPI_DOUBLE;
    case at::kInt:
      return MPI_INT32_T;
    case at::kLong:
      return MPI_INT64_T;
    case at::kBFloat16:
    case at::kHalf:
      return MPI_UINT16_T;
    default:
      throw std::invalid_argument("mpi backend: unsupported dtype " +
                                  std::string(c10::toString(type)));
  }
}

// MPI cannot add 16-bit floats: they are summed as float32.
bool fp32_sum(at::ScalarType type) {
  return type == at::kBFloat16 || type == at::kHalf;
}

char* bytes(const at::Tensor& tensor) {
  return static_cast<char*>(tensor.data_ptr());
}

void mpi_all_reduce_sum(MPI_Comm comm, const at::Tensor& tensor) {
  if (fp32_sum(tensor.scalar_type())) {
    at::Tensor wide = tensor.to(at::kFloat);
    mpi_all_reduce_sum(comm, wide);
    tensor.copy_(wide);
    return;
  }
  const MPI_Datatype type = transfer_type(tensor.scalar_type());
  const std::int64_t n = tensor.numel(), chunk = max_count.load();
  for (std::int64_t offset = 0; offset < n; offset += chunk) {
    const int count = static_cast<int>(std::min(chunk, n - offset));
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, bytes(tensor) + offset * tensor.element_size(), count,
                            type, MPI_SUM, comm),
              "MPI_Allreduce");
  }
}

void mpi_reduce_scatter_sum(MPI_Comm comm, const at::Tensor& input, const at::Tensor& output) {
  if (fp32_sum(input.scalar_type())) {
    const at::Tensor wide_input = input.to(at::kFloat);
    at::Tensor wide_output = at::empty({output.numel()}, input.options().dtype(at::kFloat));
    mpi_reduce_scatter_sum(comm, wide_input, wide_output);
    output.view(-1).copy_(wide_output);
    return;
  }
  const MPI_Datatype type = transfer_type(input.scalar_type());
  const std::int64_t n = output.numel(), chunk = max_count.load();
  if (n <= chunk) {
    check_mpi(MPI_Reduce_scatter_block(input.data_ptr(), output.data_ptr(), static_cast<int>(n),
                                       type, MPI_SUM, comm),
              "MPI_Reduce_scatter_block");
    return;
  }
  // Chunk j reduces columns [offset, offset + count) of every rank's block: gather them into a
  // contiguous send buffer first, since MPI expects the blocks back to back.
  const at::Tensor blocks = input.view({comm_size(comm), n});
  for (std::int64_t offset = 0; offset < n; offset += chunk) {
    const std::int64_t count = std::min(chunk, n - offset);
    const at::Tensor part = blocks.narrow(1, offset, count).contiguous();
    check_mpi(
        MPI_Reduce_scatter_block(part.data_ptr(), bytes(output) + offset * output.element_size(),
                                 static_cast<int>(count), type, MPI_SUM, comm),
        "MPI_Reduce_scatter_block");
  }
}

void mpi_all_gather(MPI_Comm comm, int rank, const at::Tensor& input, const at::Tensor& output) {
  const MPI_Datatype type = transfer_type(input.scalar_type());
  const std::int64_t n = input.numel(), chunk = max_count.load();
  // In place: input is output's chunk `rank` (the base class checked that nothing else overlaps).
  const bool in_place = bytes(input) == bytes(output) + rank * input.nbytes();
  if (n <= chunk) {
    check_mpi(MPI_Allgather(in_place ? MPI_IN_PLACE : input.data_ptr(), static_cast<int>(n), type,
                            output.data_ptr(), static_cast<int>(n), type, comm),
              "MPI_Allgather");
    return;
  }
  // Chunk j gathers columns [offset, offset + count) of every rank's block into a staging
  // buffer, then puts them in place. In place is fine: the send happens before the copy.
  at::Tensor blocks = output.view({comm_size(comm), n});
  for (std::int64_t offset = 0; offset < n; offset += chunk) {
    const std::int64_t count = std::min(chunk, n - offset);
    at::Tensor part = at::empty({comm_size(comm), count}, output.options());
    check_mpi(MPI_Allgather(bytes(input) + offset * input.element_size(), static_cast<int>(count),
                            type, part.data_ptr(), static_cast<int>(count), type, comm),
              "MPI_Allgather");
    blocks.narrow(1, offset, count).copy_(part);
  }
}

void mpi_broadcast(MPI_Comm comm, const at::Tensor& tensor, int root) {
  const MPI_Datatype type = transfer_type(tensor.scalar_type());
  const std::int64_t n = tensor.numel(), chunk = max_count.load();
  for (std::int64_t offset = 0; offset < n; offset += chunk) {
    const int count = static_cast<int>(std::min(chunk, n - offset));
    check_mpi(MPI_Bcast(bytes(tensor) + offset * tensor.element_size(), count, type, root, comm),
              "MPI_Bcast");
  }
}

}  // namespace

void set_mpi_max_count_for_testing(std::int64_t count) {
  if (count < 1 || count > INT_MAX) {
    throw std::invalid_argument("set_mpi_max_count_for_testing: count must be in [1, INT_MAX]");
  }
  max_count.store(count);
}

MpiCommunicator::MpiCommunicator(MPI_Comm parent, WatchdogOptions options)
    : MpiCommunicator(Adopt{}, detail::duplicate(parent), options) {}

MpiCommunicator::MpiCommunicator(Adopt, MPI_Comm comm, WatchdogOptions options)
    : Communicator(detail::comm_rank(comm), comm_size(comm), options), comm_(comm) {
  // Errors become exceptions (check_mpi()) instead of MPI's default abort.
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  start_watchdog(comm_);
}

MpiCommunicator::~MpiCommunicator() {
  stop_watchdog();
  detail::free_comm(comm_);
}

MpiCommunicator::Completion MpiCommunicator::do_all_reduce_sum(const at::Tensor& tensor) {
  mpi_all_reduce_sum(comm_, tensor);
  return {};
}

MpiCommunicator::Completion MpiCommunicator::do_reduce_scatter_sum(const at::Tensor& input,
                                                                   const at::Tensor& output) {
  mpi_reduce_scatter_sum(comm_, input, output);
  return {};
}

MpiCommunicator::Completion MpiCommunicator::do_all_gather(const at::Tensor& input,
                                                           const at::Tensor& output) {
  mpi_all_gather(comm_, rank(), input, output);
  return {};
}

MpiCommunicator::Completion MpiCommunicator::do_broadcast(const at::Tensor& tensor, int root) {
  mpi_broadcast(comm_, tensor, root);
  return {};
}

MpiCommunicator::Completion MpiCommunicator::do_barrier() {
  check_mpi(MPI_Barrier(comm_), "MPI_Barrier");
  return {};
}

std::unique_ptr<Communicator> MpiCommunicator::do_split(int color, int key) {
  MPI_Comm child = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(comm_, color, key, &child), "MPI_Comm_split");
  return std::unique_ptr<Communicator>(new MpiCommunicator(Adopt{}, child, watchdog_options()));
}

}  // namespace shc::parallel
