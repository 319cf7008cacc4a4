// The process's place in the job (SPEC §5): MPI initialisation, rank, world size, local rank and
// the device this rank computes on.
//
// Launch: `mpirun -np N shc ...`, or `srun --mpi=pmix shc ...` under SLURM (MPI learns the job
// from PMIx). Started without a launcher, MPI initialises as a singleton: a 1-rank world. If MPI
// sees one rank while SLURM says the step has more tasks, the launch lacked PMI support (each task
// would silently train alone): Runtime refuses with an explanation.
//
// Usage: call Runtime::instance() early in main(), from the main thread, before any other thread
// exists; it initialises MPI once (MPI_THREAD_MULTIPLE: the collective watchdogs call MPI from
// their own threads) and finalises it when the program exits. make_communicator() calls it too.
#pragma once

#include <c10/core/Device.h>
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/watchdog.h"

namespace shc::parallel {

class Runtime {
 public:
  // Initialises on the first call; std::runtime_error if MPI lacks MPI_THREAD_MULTIPLE or the
  // SLURM check fails.
  static Runtime& instance();
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }  // among the ranks on this node
  int local_size() const { return local_size_; }
  bool is_root() const { return rank_ == 0; }
  // cuda:(local_rank % device count) when CUDA is available (and made the current device in
  // builds with NCCL), else CPU.
  c10::Device device() const { return device_; }

  // Collective over all ranks: every rank ends with root's string (e.g. the run directory that
  // rank 0 chose). Watched like a communicator's collectives: a rank that never arrives ends the
  // job after the collective timeout (exit 5) with the ranks it waited for.
  void broadcast_string(std::string& value, int root = 0);
  // Collective over all ranks; watched like broadcast_string.
  void barrier();
  // Collective over all ranks: root receives every rank's string, in rank order (other ranks get
  // an empty vector). Watched like broadcast_string. Checkpoints gather each rank's file record.
  std::vector<std::string> gather_strings(const std::string& value, int root = 0);
  // Collective over all ranks: the elementwise maximum of `values` (same length on every rank),
  // e.g. flags every rank must agree on (a rank that saw an error or a signal sets 1). Watched.
  std::vector<std::int64_t> all_reduce_max(std::vector<std::int64_t> values);
  // The timeout of the watchdog over broadcast_string and barrier (default 600 s; <= 0 turns it
  // off). Call before the first of them, with the same value on every rank (jobs pass
  // --parallel.timeout_s); std::logic_error for another value once the watchdog runs.
  void set_collective_timeout(double seconds);
  // Stops the collective watchdogs, then MPI_Finalize (if Runtime initialised MPI). Idempotent;
  // runs automatically at exit.
  void finalize();

 private:
  Runtime();

  bool owns_mpi_ = false;
  bool finalized_ = false;
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  // Runs one runtime collective under its sequence number and the watchdog (created on first use).
  template <typename Call>
  void watched(const char* op, Call call);

  c10::Device device_{c10::kCPU};
  MPI_Comm comm_ = MPI_COMM_NULL;  // Runtime's own duplicate of MPI_COMM_WORLD
  WatchdogOptions watchdog_options_;
  std::unique_ptr<Watchdog> watchdog_;
  std::uint64_t sequence_ = 0;
};

// The check Runtime runs after MPI_Init: throws std::runtime_error if MPI reports
// `mpi_world_size` == 1 but SLURM started this step with more tasks (SLURM_STEP_NUM_TASKS, else
// SLURM_NTASKS; only under SLURM, i.e. when SLURM_PROCID is set).
void check_slurm_launch(int mpi_world_size);

}  // namespace shc::parallel
