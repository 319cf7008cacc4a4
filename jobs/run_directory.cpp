#include "jobs/run_directory.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>

#include "checkpoints/file_io.h"
#include "jobs/job.h"
#include "parallel/runtime.h"

namespace shc::jobs {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTokenFile = ".shc-run-token";

std::string random_token() {
  std::random_device device;
  const auto now = std::chrono::system_clock::now().time_since_epoch().count();
  return std::to_string(device()) + "-" + std::to_string(device()) + "-" + std::to_string(now) +
         "-" + std::to_string(::getpid());
}

}  // namespace

std::string open_run_directory(std::string requested) {
  auto& runtime = parallel::Runtime::instance();
  runtime.broadcast_string(requested);
  const std::string& dir = requested;
  std::string token, error;
  if (runtime.is_root()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec || !fs::is_directory(dir, ec)) {
      error = "cannot create the run directory '" + dir +
              "': " + (ec ? ec.message() : "a file of that name is in the way");
    } else {
      token = random_token();
      try {
        checkpoints::write_file_atomically((fs::path(dir) / kTokenFile).string(), token);
      } catch (const std::exception& e) {
        error = "cannot write into the run directory '" + dir + "': " + e.what();
      }
    }
  }
  runtime.broadcast_string(error);
  if (!error.empty()) throw ExitError(kExitData, error);
  runtime.broadcast_string(token);
  std::string seen;
  try {
    seen = checkpoints::read_file((fs::path(dir) / kTokenFile).string());
  } catch (const std::exception&) {
  }
  const bool same = seen == token;
  if (runtime.all_reduce_max({same ? 0 : 1})[0] != 0) {
    throw ExitError(kExitData,
                    "the run directory '" + dir + "' is not the same directory on every rank: " +
                        (same ? "another rank" : "rank " + std::to_string(runtime.rank())) +
                        " does not see the file rank 0 wrote there. Put the run directory on a "
                        "filesystem shared by all nodes (checkpoints need one).");
  }
  return dir;
}

std::string move_aside(const std::string& path) {
  if (!fs::exists(path)) return "";
  for (int i = 1;; ++i) {
    const std::string aside = path + "." + std::to_string(i);
    if (!fs::exists(aside)) {
      fs::rename(path, aside);
      return aside;
    }
  }
}

}  // namespace shc::jobs
