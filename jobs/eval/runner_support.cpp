#include "jobs/eval/runner_support.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "jobs/job.h"

namespace shc::jobs::eval {

namespace fs = std::filesystem;

void check_shard(const Shard& shard) {
  if (shard.world < 1 || shard.rank < 0 || shard.rank >= shard.world) {
    throw std::invalid_argument("benchmark shard: rank " + std::to_string(shard.rank) +
                                " of world " + std::to_string(shard.world));
  }
}

int64_t generation_budget(const std::string& benchmark, int64_t context_length,
                          int64_t max_new_tokens) {
  if (max_new_tokens < 1 || context_length - max_new_tokens < 1) {
    throw ExitError(kExitUsage, benchmark + ": max_new_tokens " + std::to_string(max_new_tokens) +
                                    " must be at least 1 and leave room for a prompt in the "
                                    "model's context of " +
                                    std::to_string(context_length) + " tokens");
  }
  return context_length - max_new_tokens;
}

void check_shots(const std::string& benchmark, int64_t shots) {
  if (shots < 0) {
    throw ExitError(kExitUsage, benchmark + ": shots " + std::to_string(shots) + " is negative");
  }
}

void require_directory(const std::string& benchmark, const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    throw ExitError(kExitData, benchmark + ": directory '" + path + "' does not exist");
  }
}

std::vector<std::string> files_ending_in(const std::string& benchmark, const std::string& dir,
                                         const std::string& suffix) {
  require_directory(benchmark, dir);
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      files.push_back(entry.path().string());
    }
  }
  if (ec) throw ExitError(kExitData, benchmark + ": cannot list '" + dir + "': " + ec.message());
  if (files.empty()) {
    throw ExitError(kExitData, benchmark + ": no *" + suffix + " files in '" + dir + "'");
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string read_text_file(const std::string& benchmark, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ExitError(kExitData, benchmark + ": cannot read '" + path + "': " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ExitError(kExitData, benchmark + ": error reading '" + path + "'");
  return text.str();
}

void file_error(const std::string& benchmark, const std::string& path, const std::string& what) {
  throw ExitError(kExitData, benchmark + " file '" + path + "': " + what);
}

std::string task_name(const std::string& path, const std::string& suffix) {
  const std::string name = fs::path(path).filename().string();
  return name.substr(0, name.size() - suffix.size());
}

}  // namespace shc::jobs::eval
