#include "metrics_log.h"

#include <cmath>
#include <sstream>

#include "jobs/job.h"

namespace shc::jobs {

MetricsLog::MetricsLog(const std::string& path) : out_(path, std::ios::app), path_(path) {
  if (!out_) throw ExitError(kExitData, "cannot open " + path + " for appending");
}

void MetricsLog::write(int64_t step, std::initializer_list<std::pair<const char*, double>> values) {
  std::ostringstream line;
  line.precision(8);
  line << "{\"step\": " << step;
  for (const auto& [name, value] : values) {
    line << ", \"" << name << "\": ";
    if (std::isfinite(value)) {
      line << value;
    } else {
      line << "null";
    }
  }
  line << "}\n";
  out_ << line.str();
  out_.flush();
  if (!out_) throw ExitError(kExitData, "cannot write " + path_);
}

}  // namespace shc::jobs
