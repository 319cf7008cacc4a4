#include "jobs/logging.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <vector>

#include <boost/core/null_deleter.hpp>
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/log/attributes/clock.hpp>
#include <boost/log/core.hpp>
#include <boost/log/expressions.hpp>
#include <boost/log/sinks/sync_frontend.hpp>
#include <boost/log/sinks/text_ostream_backend.hpp>
#include <boost/log/trivial.hpp>
#include <boost/make_shared.hpp>

namespace shc::jobs {

namespace {

namespace logging = boost::log;
namespace sinks = boost::log::sinks;
using TextSink = sinks::synchronous_sink<sinks::text_ostream_backend>;

// Sinks installed by this file, so a second init (tests, a job that learns its run directory
// late) replaces them instead of stacking duplicates.
std::mutex g_mutex;
std::atomic<int> g_rank{0};  // read by the formatter on whichever thread logs
boost::shared_ptr<TextSink> g_console;
boost::shared_ptr<TextSink> g_file;
bool g_console_open = false;  // this rank's records reach the console

// "[2026-11-22 05:50:01.123] [rank 0] info: message"
void format_record(const logging::record_view& rec, logging::formatting_ostream& out) {
  if (auto ts = logging::extract<boost::posix_time::ptime>("TimeStamp", rec)) {
    const auto date = ts->date();
    const auto time = ts->time_of_day();
    char stamp[48];
    std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02d %02d:%02d:%02d.%03d",
                  static_cast<int>(date.year()), static_cast<int>(date.month()),
                  static_cast<int>(date.day()), static_cast<int>(time.hours()),
                  static_cast<int>(time.minutes()), static_cast<int>(time.seconds()),
                  static_cast<int>(time.total_milliseconds() % 1000));
    out << '[' << stamp << "] ";
  }
  out << "[rank " << g_rank.load() << "] " << rec[logging::trivial::severity] << ": "
      << rec[logging::expressions::smessage];
}

logging::trivial::severity_level parse_level(const std::string& level) {
  using logging::trivial::severity_level;
  if (level == "trace") return severity_level::trace;
  if (level == "debug") return severity_level::debug;
  if (level == "info") return severity_level::info;
  if (level == "warning") return severity_level::warning;
  if (level == "error") return severity_level::error;
  if (level == "fatal") return severity_level::fatal;
  throw std::invalid_argument("invalid log level '" + level +
                              "'; choose one of: trace, debug, info, warning, error, fatal");
}

boost::shared_ptr<TextSink> make_sink(boost::shared_ptr<std::ostream> stream) {
  auto backend = boost::make_shared<sinks::text_ostream_backend>();
  backend->add_stream(std::move(stream));
  // Flush per record: the console interleaves with other output and a crashed rank's file must
  // end with its last message.
  backend->auto_flush(true);
  auto sink = boost::make_shared<TextSink>(backend);
  sink->set_formatter(&format_record);
  return sink;
}

}  // namespace

void init_logging(int rank, const std::string& level, bool all_ranks_to_console) {
  const auto min_level = parse_level(level);
  std::lock_guard<std::mutex> lock(g_mutex);
  auto core = logging::core::get();
  g_rank = rank;
  // Returns false when already present; the attribute is the same either way.
  core->add_global_attribute("TimeStamp", logging::attributes::local_clock());
  core->set_filter(logging::trivial::severity >= min_level);

  if (g_console) core->remove_sink(g_console);
  g_console = make_sink(boost::shared_ptr<std::ostream>(&std::clog, boost::null_deleter()));
  g_console_open = rank == 0 || all_ranks_to_console;
  if (!g_console_open) {
    // Installed but closed rather than left out: with no sink at all Boost.Log falls back to
    // its default sink, which would print every rank's records to the console.
    g_console->set_filter([](const logging::attribute_value_set&) { return false; });
  }
  core->add_sink(g_console);
}

void add_rank_log_file(const std::string& run_dir, int rank) {
  const std::filesystem::path dir = std::filesystem::path(run_dir) / "logs";
  std::filesystem::create_directories(dir);
  const std::filesystem::path path = dir / ("rank" + std::to_string(rank) + ".log");
  // Append: a resumed run continues the same per-rank log.
  auto file = boost::make_shared<std::ofstream>(path, std::ios::out | std::ios::app);
  if (!*file) {
    throw std::filesystem::filesystem_error("cannot open log file", path,
                                            std::error_code(errno, std::generic_category()));
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  auto core = logging::core::get();
  g_rank = rank;
  core->add_global_attribute("TimeStamp", logging::attributes::local_clock());
  if (g_file) core->remove_sink(g_file);
  g_file = make_sink(std::move(file));
  core->add_sink(g_file);
}

void log_fatal(const std::string& message) {
  BOOST_LOG_TRIVIAL(error) << message;
  bool console_open = false;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    console_open = g_console && g_console_open;
  }
  if (console_open) return;
  const std::string line = "[rank " + std::to_string(g_rank.load()) + "] error: " + message + "\n";
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

namespace {
// A non-negative integer environment variable, or -1.
long env_number(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return -1;
  char* end = nullptr;
  const long number = std::strtol(value, &end, 10);
  return *end == '\0' && number >= 0 ? number : -1;
}
}  // namespace

int world_size_from_environment() {
  std::vector<const char*> names{"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
  if (env_number("SLURM_PROCID") >= 0) {
    names.push_back("SLURM_STEP_NUM_TASKS");
    names.push_back("SLURM_NTASKS");
  }
  for (const char* name : names) {
    const long size = env_number(name);
    if (size >= 1) return static_cast<int>(size);
  }
  return 1;
}

int rank_from_environment() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"}) {
    const long rank = env_number(name);
    if (rank >= 0) return static_cast<int>(rank);
  }
  return 0;
}

}  // namespace shc::jobs
