#include "metrics_log.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>

#include "checkpoints/file_io.h"
#include "jobs/job.h"

namespace shc::jobs {

MetricsLog::MetricsLog(const std::string& path) : out_(path, std::ios::app), path_(path) {
  if (!out_) throw ExitError(kExitData, "cannot open " + path + " for appending");
}

void MetricsLog::write(int64_t step, const Metrics& values) {
  nlohmann::ordered_json record = {{"step", step}};
  for (const auto& [name, value] : values) {
    record[name] = std::isfinite(value) ? nlohmann::ordered_json(value) : nullptr;
  }
  out_ << record.dump() << '\n';
  out_.flush();
  if (!out_) throw ExitError(kExitData, "cannot write " + path_);
}

int64_t truncate_metrics_after(const std::string& path, int64_t step) {
  if (!std::filesystem::exists(path)) return 0;
  std::ifstream in(path);
  std::string kept, line;
  int64_t dropped = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    // A line cut short by a crash does not parse: it belongs to no kept step.
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_discarded() && record.contains("step") &&
        record["step"].get<int64_t>() <= step) {
      kept += line + '\n';
    } else {
      ++dropped;
    }
  }
  if (dropped > 0) checkpoints::write_file_atomically(path, kept);
  return dropped;
}

}  // namespace shc::jobs
