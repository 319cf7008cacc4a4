// RUN_DIR/metrics.jsonl: one JSON object per line ({"step": N, "<metric>": value, ...}), flushed
// per record so a crash loses nothing that was logged. Written through nlohmann-json, so names
// are escaped and a non-finite value is null, never invalid JSON.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace shc::jobs {

using Metrics = std::vector<std::pair<std::string, double>>;

class MetricsLog {
 public:
  // Appends to `path` (a resumed run continues the same file).
  explicit MetricsLog(const std::string& path);
  void write(int64_t step, const Metrics& values);

 private:
  std::ofstream out_;
  std::string path_;
};

// For a run resumed at `step`: keeps the records of steps <= step and drops the rest (steps an
// interrupted run trained past its last checkpoint), rewriting the file atomically. Returns how
// many records were dropped. A missing file is left missing.
int64_t truncate_metrics_after(const std::string& path, int64_t step);

}  // namespace shc::jobs
