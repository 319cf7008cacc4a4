// The collective watchdog (SPEC §5): a hung collective must end the job with a message naming the
// ranks that never arrived, never hang it silently.
//
// Every collective of a communicator carries a sequence number #N (1, 2, ... counted per
// communicator, identical on every rank because collectives run in the same order everywhere).
// The communicator calls begin(N, op) before it enters #N and end(N) when #N has finished on this
// rank (for an asynchronous backend: end(N, done), with done() true once the device finished it).
// A thread per communicator checks every 200 ms that nothing stays in flight longer than
// timeout_s. When #N does, it asks every peer which collective it has entered last, prints
//   [rank R] collective #N <op> timed out after S s; waiting for ranks a, b
// to stderr (R and a, b are MPI_COMM_WORLD ranks; the list holds the peers that had not entered #N
// or did not answer in time), and ends the whole job with kWatchdogExitCode through abort_job()
// (abort.h: NCCL communicators aborted, then MPI_Abort, so mpirun and srun stop every rank). The
// same happens when the communicator reports an asynchronous error (NCCL's
// ncclCommGetAsyncError, polled every tick) or a device query of a finished collective fails.
//
// Side channel: the question cannot travel through the blocked collective, so the watchdog owns an
// MPI_Comm_dup of the group and talks point to point on it from its own thread
// (MPI_THREAD_MULTIPLE makes that legal beside the blocked main thread). Cost in a healthy run:
// one MPI_Iprobe per communicator every 200 ms and no messages at all; peers are only asked once
// a collective has timed out (then O(group size) 8-byte messages per timed-out rank). A rank
// whose main thread is stuck outside MPI still answers, because its watchdog thread keeps running.
#pragma once

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace shc::parallel {

// The exit code of a process whose collective timed out (equals jobs::kExitTimeout).
inline constexpr int kWatchdogExitCode = 5;

struct WatchdogOptions {
  // Seconds a collective may stay in flight on this rank; <= 0 disables the watchdog (no thread,
  // no side channel). Must be the same on every rank of a communicator.
  double timeout_s = 600;
};

class Watchdog {
 public:
  // True once a collective finished; polled by the watchdog thread (e.g. a CUDA event query).
  using DoneFn = std::function<bool()>;
  // The communicator's asynchronous error, empty while healthy; polled every tick.
  using HealthFn = std::function<std::string()>;

  // Collective over `group` (duplicates it for the side channel); starts the thread.
  Watchdog(MPI_Comm group, WatchdogOptions options, HealthFn health = nullptr);
  // Stops the thread, completes its messages and frees the side channel.
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // This rank enters collective #seq named op (a string literal).
  void begin(std::uint64_t seq, const char* op);
  // #seq has finished on this rank; or, with `done`, finishes once done() returns true.
  void end(std::uint64_t seq, DoneFn done = nullptr);

  // Stops the thread (idempotent). Communicators call it before freeing what done() reads.
  void stop();
  // Stops every live watchdog: the runtime calls it before MPI_Finalize.
  static void stop_all();

  const WatchdogOptions& options() const { return options_; }

 private:
  struct InFlight {
    const char* op;
    std::chrono::steady_clock::time_point start;
    DoneFn done;  // null while the collective runs synchronously in the caller
  };
  struct PendingSend {
    std::int64_t value;  // the buffer of `request`: must outlive it
    MPI_Request request;
  };

  void run();
  // Receives everything peers sent (records what they entered, answers their questions) and
  // retires completed sends. Returns the peers that sent anything.
  std::vector<int> serve_side_channel();
  void send(int peer, int tag, std::int64_t value);
  [[noreturn]] void report_and_exit(std::uint64_t seq, const std::string& op);
  [[noreturn]] void fail(const std::string& what);

  WatchdogOptions options_;
  HealthFn health_;
  bool enabled_;
  MPI_Comm side_ = MPI_COMM_NULL;
  int rank_ = 0;                            // in the group
  int world_rank_ = 0;                      // for the message prefix
  std::vector<int> world_ranks_;            // group rank -> MPI_COMM_WORLD rank
  std::vector<std::int64_t> peer_entered_;  // latest sequence number each peer reported
  std::list<PendingSend> sends_;            // list: a buffer's address must not move
  std::once_flag stopped_;

  std::mutex mutex_;  // guards in_flight_ and stopping_
  std::condition_variable wake_;
  std::map<std::uint64_t, InFlight> in_flight_;  // by sequence number: begin() is the oldest
  bool stopping_ = false;
  std::atomic<std::uint64_t> entered_{0};  // what this rank answers when asked
  std::thread thread_;
};

}  // namespace shc::parallel
