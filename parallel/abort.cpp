#include "parallel/abort.h"

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace shc::parallel {
namespace {

// Never destroyed: abort_job may run during static destruction (a watchdog thread firing late).
std::mutex& hooks_mutex() {
  static auto* mutex = new std::mutex;
  return *mutex;
}
std::map<std::uint64_t, std::function<void()>>& hooks() {
  static auto* registered = new std::map<std::uint64_t, std::function<void()>>;
  return *registered;
}
std::uint64_t next_id = 1;  // guarded by hooks_mutex()
std::atomic<bool> aborting{false};

}  // namespace

std::uint64_t add_abort_hook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(hooks_mutex());
  const std::uint64_t id = next_id++;
  hooks().emplace(id, std::move(hook));
  return id;
}

void remove_abort_hook(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(hooks_mutex());
  hooks().erase(id);
}

void abort_job(int exit_code) {
  if (aborting.exchange(true)) {
    // Another thread is ending the process; it must be the one whose code the job reports.
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  std::vector<std::function<void()>> pending;
  {
    std::lock_guard<std::mutex> lock(hooks_mutex());
    for (auto& item : hooks()) pending.push_back(item.second);
  }
  // All hooks at once, each on its own thread, and a bounded wait: aborting one NCCL communicator
  // can wait for a kernel of another that only that one's abort releases (ncclCommAbort syncs its
  // internal stream, which may sit behind the other's kernel). Dying anyway: a failed or stuck
  // hook must not stop the others or the abort.
  auto left = std::make_shared<std::atomic<int>>(static_cast<int>(pending.size()));
  for (auto& hook : pending) {
    std::thread([hook, left] {
      try {
        hook();
      } catch (...) {
      }
      --*left;
    }).detach();
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (*left > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::fflush(stdout);
  std::fflush(stderr);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

}  // namespace shc::parallel
