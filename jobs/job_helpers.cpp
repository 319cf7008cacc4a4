#include "jobs/job_helpers.h"

#include <torch/torch.h>

#include <algorithm>
#include <thread>

#include <sched.h>

namespace shc::jobs {

int default_threads(const parallel::Runtime& runtime) {
  cpu_set_t mask;
  const int online = int(std::thread::hardware_concurrency());
  if (sched_getaffinity(0, sizeof(mask), &mask) != 0)
    return std::max(1, online / runtime.local_size());
  const int allowed = CPU_COUNT(&mask);
  return std::max(1, allowed < online ? allowed : online / runtime.local_size());
}

torch::Tensor batch_tensor(std::vector<int32_t> tokens, int64_t rows) {
  auto t = torch::from_blob(tokens.data(), {rows, int64_t(tokens.size()) / rows}, torch::kInt);
  return t.to(torch::kLong);
}

}  // namespace shc::jobs
