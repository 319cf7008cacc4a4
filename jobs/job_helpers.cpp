#include "jobs/job_helpers.h"

#include "jobs/model_files.h"

#include <torch/torch.h>

#include <algorithm>
#include <sstream>
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

std::vector<std::string> agreed_list(const std::function<std::vector<std::string>()>& list,
                                     parallel::Runtime& runtime) {
  std::vector<std::string> items;
  std::string joined;
  if (runtime.is_root()) {
    items = list();
    for (const auto& item : items) joined += item + '\n';
  }
  runtime.broadcast_string(joined);
  if (runtime.is_root()) return items;
  std::stringstream s(joined);
  for (std::string item; std::getline(s, item, '\n');) items.push_back(item);
  return items;
}

StoredModel read_agreed_stored_model(const std::string& path, parallel::Runtime& runtime) {
  return read_stored_model(
      agreed_list([&] { return std::vector{resolve_stored_model_path(path)}; }, runtime)[0]);
}

std::vector<std::string> split_list(const std::string& comma_separated) {
  std::vector<std::string> out;
  std::stringstream s(comma_separated);
  for (std::string item; std::getline(s, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace shc::jobs
