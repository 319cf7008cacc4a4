// RUN_DIR/metrics.jsonl: one JSON object per line, flushed per record so a crash loses nothing
// that was logged.
#pragma once

#include <cstdint>
#include <fstream>
#include <initializer_list>
#include <string>
#include <utility>

namespace shc::jobs {

class MetricsLog {
 public:
  // Appends to `path` (a resumed run continues the same file).
  explicit MetricsLog(const std::string& path);
  // {"step": step, "<name>": value, ...}; non-finite values are written as null.
  void write(int64_t step, std::initializer_list<std::pair<const char*, double>> values);

 private:
  std::ofstream out_;
  std::string path_;
};

}  // namespace shc::jobs
