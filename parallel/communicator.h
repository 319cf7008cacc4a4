// Collectives over tensors (SPEC §5), in the manner of PyTorch's c10d process groups: a
// Communicator is a group of ranks; every rank of the group calls the same collectives in the same
// order. Backends: "mpi" (CPU tensors, MPI collectives) and "nccl" (CUDA tensors of one device,
// NCCL on the tensor's current CUDA stream; only in builds with SHC_WITH_CUDA).
//
// This base class holds everything that is not a device call, so the CPU tests exercise it for
// both backends: argument checks, kAvg (a sum, then a division by size() on the result), the
// sequence numbers and the watchdog (watchdog.h). So the public collectives are not virtual: a
// backend (or a test double) implements the protected do_*() sum/copy primitives only, and calls
// start_watchdog() if it wants one.
//
// Rules for callers:
// - Tensors must be contiguous, on the communicator's device(), of a supported dtype: float32,
//   float64, bfloat16, float16, int32, int64. kAvg needs a floating dtype. Both backends reject a
//   tensor on any other device. Buffers made for a collective (flat gradient buckets, shards,
//   gathered units, the scalars of loss and norm averaging) are allocated with empty(), zeros()
//   or scalar() here, never with a bare at::empty: that is the device rule of SPEC §5 made
//   structural, and a test double can check that every tensor it receives came from them.
// - reduce_scatter / all_gather need input.numel() == size() * output.numel() (resp. the
//   reverse): callers pad uneven data themselves (std::invalid_argument otherwise).
//   all_reduce and broadcast take any numel.
// - Results are written into the tensors passed in (in place, or `output`). They are taken as
//   const at::Tensor& like ATen's out= arguments (a tensor is a handle; const does not protect
//   its data), so a view such as flat.narrow(0, offset, n) can be passed directly.
// - bfloat16/float16 sums: the mpi backend sums in float32 and rounds once; nccl sums natively.
// - all_gather may run in place: input may be exactly output's chunk rank() (a view of it).
//   Any other overlap of input and output is std::invalid_argument.
// - One thread at a time per communicator (collectives must be issued in the same order on every
//   rank). Different communicators may be used from different threads at once (MPI runs in
//   MPI_THREAD_MULTIPLE), e.g. split(0, rank()) gives a DDP communication thread its own group.
// - Create communicators after Runtime::instance() (make_communicator() calls it) and destroy
//   them before main() returns (they own threads, MPI and NCCL handles).
// - A collective that stays in flight longer than WatchdogOptions::timeout_s ends the process
//   with exit code 5 and a message naming the ranks that did not arrive (watchdog.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "parallel/watchdog.h"

namespace shc::parallel {

enum class ReduceOp { kSum, kAvg };

class Communicator {
 public:
  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  virtual std::string backend() const = 0;  // "mpi" | "nccl"
  virtual c10::Device device() const = 0;   // where its tensors must live

  // In place: every rank ends with the elementwise sum (or mean) over the group.
  void all_reduce(const at::Tensor& tensor, ReduceOp op = ReduceOp::kSum);
  // input.numel() == size() * output.numel(); rank r receives the reduction of chunk r.
  void reduce_scatter(const at::Tensor& input, const at::Tensor& output,
                      ReduceOp op = ReduceOp::kSum);
  // output.numel() == size() * input.numel(); chunk r of output is rank r's input.
  void all_gather(const at::Tensor& input, const at::Tensor& output);
  // In place: every rank ends with root's tensor (same numel and dtype everywhere).
  void broadcast(const at::Tensor& tensor, int root);
  void barrier();
  // Sub-groups, like MPI_Comm_split: ranks passing the same color (>= 0) form a group, ordered
  // by key, then by rank() here. Collective over this communicator; same backend and watchdog
  // options. split(0, rank()) duplicates the communicator.
  std::unique_ptr<Communicator> split(int color, int key);

  // Buffers for collectives, on device(): one flat tensor of `numel` elements.
  at::Tensor empty(std::int64_t numel, at::ScalarType dtype);
  at::Tensor zeros(std::int64_t numel, at::ScalarType dtype);
  // A one-element tensor holding `value`.
  at::Tensor scalar(double value, at::ScalarType dtype = at::kDouble);
  // The sum (or mean) over the group of one number per rank, computed in float64 on device().
  double all_reduce_scalar(double value, ReduceOp op = ReduceOp::kSum);

  // Sequence number of the last collective this rank entered (0 before the first); the
  // watchdog's #N. Counted per communicator; split() is a collective too.
  std::uint64_t last_sequence() const { return sequence_; }

 protected:
  // What a backend returns from a primitive: empty when the operation has completed on return
  // (MPI), else a predicate that turns true once the device has finished it (NCCL, CUDA event).
  using Completion = Watchdog::DoneFn;

  Communicator(int rank, int size, WatchdogOptions options);
  // Called by the backend's constructor once its group exists (collective over the group).
  void start_watchdog(MPI_Comm group);
  // Called first by the backend's destructor, before it frees what a Completion reads.
  void stop_watchdog();
  // Runs a backend's own blocking group call (e.g. NCCL's communicator creation) like a
  // collective: under the next sequence number and the watchdog, so that a rank that never
  // arrives ends the job instead of hanging it.
  void run_watched(const char* op, const std::function<void()>& call);
  const WatchdogOptions& watchdog_options() const { return watchdog_options_; }

  // Primitives on checked arguments (contiguous, same dtype, sizes consistent, device()).
  virtual Completion do_all_reduce_sum(const at::Tensor& tensor) = 0;
  virtual Completion do_reduce_scatter_sum(const at::Tensor& input, const at::Tensor& output) = 0;
  virtual Completion do_all_gather(const at::Tensor& input, const at::Tensor& output) = 0;
  virtual Completion do_broadcast(const at::Tensor& tensor, int root) = 0;
  virtual Completion do_barrier() = 0;
  virtual std::unique_ptr<Communicator> do_split(int color, int key) = 0;
  // An error the backend found outside any call (NCCL: ncclCommGetAsyncError), empty while
  // healthy. The watchdog polls it from its thread and ends the job on one.
  virtual std::string async_error() { return {}; }
  // Every buffer of empty() / zeros() / scalar() comes from here: zero-filled when `zero`.
  // Backends keep the default (a fresh tensor on device()); a checking test double records them.
  virtual at::Tensor do_allocate(std::int64_t numel, at::ScalarType dtype, bool zero);

 private:
  // Runs one collective under its sequence number and the watchdog.
  void run(const char* op, const std::function<Completion()>& primitive);
  void check_tensor(const at::Tensor& tensor, const char* op, const char* what) const;

  int rank_;
  int size_;
  WatchdogOptions watchdog_options_;
  std::uint64_t sequence_ = 0;
  std::unique_ptr<Watchdog> watchdog_;
};

// The group of all ranks (MPI_COMM_WORLD) on one backend: "auto" (nccl for a CUDA device in a
// build with NCCL, else mpi), "mpi" (device must be CPU) or "nccl" (device must be CUDA; without
// an index, the runtime's device). Initialises the Runtime if needed; collective over all ranks.
// std::invalid_argument for an unknown backend, a device the backend cannot serve, or nccl in a
// build without NCCL.
std::unique_ptr<Communicator> make_communicator(const std::string& backend, c10::Device device,
                                                WatchdogOptions options = {});

// Whether this build has the NCCL backend.
bool nccl_available();
// The MPI library's and NCCL's versions in one line, for provenance records (NCCL: "not built"
// in a build without it).
std::string library_versions();
// The linked NCCL's version, e.g. "2.27.7", or "not built".
std::string nccl_version();

}  // namespace shc::parallel
