#include "parallel/runtime.h"

#include <torch/cuda.h>
#ifdef SHC_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "parallel/watchdog.h"

namespace shc::parallel {
namespace {

const char* env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

}  // namespace

void check_slurm_launch(int mpi_world_size) {
  if (mpi_world_size > 1 || env("SLURM_PROCID") == nullptr) return;
  // mpirun (even inside an allocation, where it starts its daemons with srun) tells MPI the
  // world itself: then a 1-rank world is what the user asked for.
  if (env("OMPI_COMM_WORLD_SIZE") != nullptr) return;
  // The tasks of this srun step. A batch script itself also sees SLURM_NTASKS (the allocation)
  // but no step variables: running one process there is legitimate (e.g. `shc prepare`).
  const char* tasks = env("SLURM_STEP_NUM_TASKS");
  if (tasks == nullptr && env("SLURM_STEP_ID") != nullptr) tasks = env("SLURM_NTASKS");
  if (tasks == nullptr || std::atol(tasks) <= 1) return;
  const char* local = env("SLURM_LOCALID");
  throw std::runtime_error(
      std::string("SLURM started this step with ") + tasks + " tasks (this is SLURM_PROCID=" +
      env("SLURM_PROCID") + ", SLURM_LOCALID=" + (local ? local : "?") +
      "), but MPI sees a world of 1 rank: the launch gave MPI no process-management interface "
      "(PMI), so every task would run alone. Launch with `srun --mpi=pmix shc ...` (`srun "
      "--mpi=list` shows the plugins of this cluster; OpenMPI needs pmix), or run `mpirun -np N "
      "shc ...` inside the allocation.");
}

Runtime& Runtime::instance() {
  static Runtime runtime;
  return runtime;
}

Runtime::Runtime() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  if (initialized) {
    MPI_Query_thread(&provided);
  } else {
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
      throw std::runtime_error("MPI_Init_thread failed");
    }
    owns_mpi_ = true;
  }
  try {
    if (provided < MPI_THREAD_MULTIPLE) {
      throw std::runtime_error(
          "MPI provides thread level " + std::to_string(provided) +
          ", but SHC needs MPI_THREAD_MULTIPLE (the collective watchdogs call MPI from their own "
          "threads): use an MPI library built with thread support");
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
    check_slurm_launch(world_size_);
  } catch (...) {
    if (owns_mpi_) MPI_Finalize();  // a clean exit for the launcher, not an "exited improperly"
    throw;
  }

  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
  // broadcast_string() and barrier() use their own context, never matching user traffic.
  MPI_Comm_dup(MPI_COMM_WORLD, &comm_);

  if (torch::cuda::is_available()) {
    const int count = static_cast<int>(torch::cuda::device_count());
    device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank_ % count));
#ifdef SHC_WITH_NCCL
    // NCCL and the caching allocator work on the current device: make it this rank's.
    c10::cuda::set_device(device_.index());
#endif
  }
}

Runtime::~Runtime() {
  finalize();
}

void Runtime::finalize() {
  if (finalized_) return;
  finalized_ = true;
  // The watchdog threads call MPI: they must be gone before MPI_Finalize.
  Watchdog::stop_all();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  if (owns_mpi_) MPI_Finalize();
}

void Runtime::set_collective_timeout(double seconds) {
  if (watchdog_ && seconds == watchdog_options_.timeout_s) return;  // e.g. a second job run
  if (watchdog_) {
    throw std::logic_error(
        "Runtime::set_collective_timeout: call it before the first barrier or broadcast_string");
  }
  watchdog_options_.timeout_s = seconds;
}

template <typename Call>
void Runtime::watched(const char* op, Call call) {
  if (!watchdog_) watchdog_ = std::make_unique<Watchdog>(comm_, watchdog_options_);
  const std::uint64_t seq = ++sequence_;
  watchdog_->begin(seq, op);
  call();
  watchdog_->end(seq);
}

void Runtime::broadcast_string(std::string& value, int root) {
  // The length and the bytes travel as one collective for the watchdog; a length above INT_MAX
  // is refused on every rank (root's value reaches all of them first), so none is left waiting.
  std::uint64_t length = value.size();
  watched("broadcast_string", [&] {
    MPI_Bcast(&length, 1, MPI_UINT64_T, root, comm_);
    if (length > static_cast<std::uint64_t>(INT_MAX)) return;
    value.resize(length);
    MPI_Bcast(value.data(), static_cast<int>(length), MPI_CHAR, root, comm_);
  });
  if (length > static_cast<std::uint64_t>(INT_MAX)) {
    throw std::invalid_argument("broadcast_string: string longer than INT_MAX bytes");
  }
}

void Runtime::barrier() {
  watched("barrier", [&] { MPI_Barrier(comm_); });
}

std::vector<std::string> Runtime::gather_strings(const std::string& value, int root) {
  if (value.size() > static_cast<size_t>(INT_MAX)) {
    throw std::invalid_argument("gather_strings: string longer than INT_MAX bytes");
  }
  const int length = static_cast<int>(value.size());
  std::vector<int> lengths(rank_ == root ? world_size_ : 0), displacements(lengths.size());
  std::string all;
  watched("gather_strings", [&] {
    MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, root, comm_);
    if (rank_ == root) {
      int64_t total = 0;
      for (int r = 0; r < world_size_; ++r) {
        displacements[r] = static_cast<int>(total);
        total += lengths[r];
      }
      // Byte displacements are ints in MPI: the records of a checkpoint are far smaller.
      if (total > INT_MAX) throw std::length_error("gather_strings: more than INT_MAX bytes");
      all.resize(static_cast<size_t>(total));
    }
    MPI_Gatherv(value.data(), length, MPI_CHAR, all.data(), lengths.data(), displacements.data(),
                MPI_CHAR, root, comm_);
  });
  std::vector<std::string> out;
  for (size_t r = 0; r < lengths.size(); ++r)
    out.push_back(all.substr(displacements[r], lengths[r]));
  return out;
}

std::vector<std::int64_t> Runtime::all_reduce_max(std::vector<std::int64_t> values) {
  watched("all_reduce_max", [&] {
    MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_INT64_T,
                  MPI_MAX, comm_);
  });
  return values;
}

}  // namespace shc::parallel
