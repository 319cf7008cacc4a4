// The MPI backend of Communicator: CPU tensors, MPI collectives on a private duplicate of the
// parent communicator (so its traffic never matches anyone else's).
//
// - bfloat16 / float16: MPI has no such types. Sums (all_reduce, reduce_scatter) run on a float32
//   copy and round once at the end (more accurate than summing in 16 bits; costs a temporary of
//   twice the size); all_gather and broadcast move the 2-byte values unchanged.
// - Counts above INT_MAX elements (MPI's int counts) are split into several calls.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace shc::parallel {

class MpiCommunicator final : public Communicator {
 public:
  // Collective over `parent`, which it duplicates.
  MpiCommunicator(MPI_Comm parent, WatchdogOptions options);
  ~MpiCommunicator() override;

  std::string backend() const override { return "mpi"; }
  c10::Device device() const override { return c10::Device(c10::kCPU); }

 protected:
  Completion do_all_reduce_sum(const at::Tensor& tensor) override;
  Completion do_reduce_scatter_sum(const at::Tensor& input, const at::Tensor& output) override;
  Completion do_all_gather(const at::Tensor& input, const at::Tensor& output) override;
  Completion do_broadcast(const at::Tensor& tensor, int root) override;
  Completion do_barrier() override;
  std::unique_ptr<Communicator> do_split(int color, int key) override;

 private:
  struct Adopt {};
  // Takes ownership of `comm` (a fresh duplicate or split).
  MpiCommunicator(Adopt, MPI_Comm comm, WatchdogOptions options);

  MPI_Comm comm_;
};

// Elements per MPI call (default INT_MAX). Tests lower it to exercise the chunked paths on small
// tensors; not for production use.
void set_mpi_max_count_for_testing(std::int64_t count);

}  // namespace shc::parallel
