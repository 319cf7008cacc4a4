// Ending the whole job from one rank (SPEC §5, failure propagation). A rank that fails while its
// peers wait inside a collective must not return from main(): MPI_Finalize, a barrier or a
// blocking destructor would leave it (or them) hanging until the collective timeout. Instead it
// calls abort_job(code): NCCL communicators are aborted first (ncclCommAbort never waits for
// operations in flight, unlike ncclCommDestroy), then MPI_Abort ends every rank; mpirun and srun
// report `code` as the job's exit status (mpirun -np 2: measured, it returns the code).
#pragma once

#include <cstdint>
#include <functional>

namespace shc::parallel {

// Something abort_job must do before the process dies (e.g. abort an NCCL communicator). Hooks
// run once, all at the same time on threads of their own; abort_job waits for them at most 10 s.
// A hook may run after remove_abort_hook() returned (abort_job had copied the list): it must guard
// what it touches.
std::uint64_t add_abort_hook(std::function<void()> hook);
void remove_abort_hook(std::uint64_t id);

// Runs the abort hooks (10 s at most), flushes stdout and stderr, then MPI_Abort(MPI_COMM_WORLD,
// exit_code) when MPI is initialised and not finalised, else _Exit(exit_code). Safe from any
// thread; a second caller waits for the first to end the process.
[[noreturn]] void abort_job(int exit_code);

}  // namespace shc::parallel
