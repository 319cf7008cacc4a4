// A job in which some ranks stop calling collectives: the others must be ended by the watchdog
// (exit 5, a message naming the missing ranks), not hang. Driven by check_watchdog.py.
//
//   watchdog_probe TIMEOUT_S HANG_RANKS [--odd-group | --runtime | --stuck-abort-hook]
//
// Every rank enters two healthy collectives (#1 barrier, #2 all_reduce); then the world ranks in
// HANG_RANKS (comma-separated) sleep for a minute while the rest enter #3 all_reduce. With
// --odd-group all of this happens in the group of odd world ranks (from split()), and even ranks
// only sleep. With --runtime the collectives are the Runtime's own (#1 barrier, #2
// broadcast_string, #3 barrier), which jobs use before any communicator exists. With
// --stuck-abort-hook every rank first registers an abort hook that never returns (as an NCCL
// abort waiting on a kernel might): the job must still end, abort_job's wait being bounded.
// Sleepers never wake in a passing run: mpirun stops them once a rank exits 5.
#include <ATen/ops/ones.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "parallel/abort.h"
#include "parallel/communicator.h"
#include "parallel/runtime.h"

int main(int argc, char** argv) {
  using namespace shc::parallel;
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: watchdog_probe TIMEOUT_S HANG_RANKS [--odd-group | --runtime | "
                 "--stuck-abort-hook]\n");
    return 2;
  }
  const double timeout_s = std::atof(argv[1]);
  std::set<int> hang;
  std::stringstream list(argv[2]);
  for (std::string item; std::getline(list, item, ',');) hang.insert(std::stoi(item));
  const std::string mode = argc > 3 ? argv[3] : "";

  Runtime& runtime = Runtime::instance();
  const int rank = runtime.rank();
  if (mode == "--stuck-abort-hook") {
    add_abort_hook([] { std::this_thread::sleep_for(std::chrono::hours(1)); });
  }
  if (mode == "--runtime") {
    runtime.set_collective_timeout(timeout_s);
    std::string text = "from rank 0";
    runtime.barrier();
    runtime.broadcast_string(text);
    if (hang.count(rank) != 0) {
      std::this_thread::sleep_for(std::chrono::seconds(60));
      return 0;
    }
    runtime.barrier();  // never completes: the watchdog ends the process
    std::fprintf(stderr, "[rank %d] collective #3 completed, which it must not\n", rank);
    return 1;
  }
  std::unique_ptr<Communicator> comm =
      make_communicator("mpi", c10::Device(c10::kCPU), WatchdogOptions{timeout_s});
  if (mode == "--odd-group") {
    comm = comm->split(rank % 2, rank);
    if (rank % 2 == 0) {
      std::this_thread::sleep_for(std::chrono::seconds(60));
      return 0;
    }
  }

  at::Tensor tensor = at::ones({8}, at::TensorOptions().dtype(at::kFloat));
  comm->barrier();
  comm->all_reduce(tensor);
  if (hang.count(rank) != 0) {
    std::this_thread::sleep_for(std::chrono::seconds(60));
    return 0;
  }
  comm->all_reduce(tensor);  // never completes: the watchdog ends the process
  std::fprintf(stderr, "[rank %d] collective #3 completed, which it must not\n", rank);
  return 1;
}
