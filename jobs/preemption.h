// Preemption (SPEC §8, §9): SIGUSR1 (SLURM's warning before the time limit, --signal=USR1@120) and
// SIGTERM (scancel, node drain) only set a flag here. The trainer reads it at every step boundary,
// all ranks agree through one collective, checkpoint, and exit 75 so the scheduler requeues the
// job. A second signal during that save changes nothing: the handler never interrupts a write.
#pragma once

namespace shc::jobs {

// Installs the handlers (idempotent). Also ignores SIGXFSZ, so that a write beyond RLIMIT_FSIZE
// fails with EFBIG (a checkpoint error, exit 3) instead of killing the process.
void install_preemption_handlers();
// The signal received since installation (SIGUSR1 or SIGTERM), 0 if none.
int preemption_signal();

}  // namespace shc::jobs
