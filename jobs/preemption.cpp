#include "jobs/preemption.h"

#include <csignal>

namespace shc::jobs {
namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void remember_signal(int signal) {
  g_signal = signal;
}

}  // namespace

void install_preemption_handlers() {
  struct sigaction action {};
  action.sa_handler = remember_signal;
  sigemptyset(&action.sa_mask);
  // SA_RESTART: an interrupted read or write resumes instead of failing with EINTR.
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::signal(SIGXFSZ, SIG_IGN);
}

int preemption_signal() {
  return g_signal;
}

}  // namespace shc::jobs
