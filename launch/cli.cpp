#include "launch/cli.h"

#include <algorithm>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <stdexcept>

#include <boost/program_options.hpp>

#ifdef SHC_WITH_NCCL
#include <nccl.h>
#endif

#include "checkpoints/errors.h"
#include "data/errors.h"
#include "jobs/job.h"
#include "jobs/logging.h"
#include "parallel/abort.h"
#include "parallel/communicator.h"

#ifndef SHC_VERSION
#define SHC_VERSION "0.0.0"  // CMake defines the project version; this is for hand builds
#endif

namespace shc::launch {

namespace po = boost::program_options;

namespace {

constexpr const char* kUsageArgs = "[--config FILE.ini]... [--section.key value]...";

// A usage error found by our own checks (unknown key, unreadable config file); boost's own
// po::error is reported the same way.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::size_t edit_distance(const std::string& a, const std::string& b) {
  // Levenshtein distance, one row at a time.
  std::vector<std::size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), 0);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  const std::string match = closest_match(word, candidates);
  return match.empty() ? "" : " (did you mean '" + match + "'?)";
}

std::vector<std::string> option_names(const po::options_description& options) {
  std::vector<std::string> names;
  for (const auto& option : options.options()) names.push_back(option->long_name());
  return names;
}

std::vector<std::string> job_names() {
  std::vector<std::string> names;
  for (const auto* job : jobs::JobRegistry::instance().list()) names.push_back(job->name);
  return names;
}

void print_jobs(std::ostream& os) {
  const auto jobs = jobs::JobRegistry::instance().list();
  std::size_t width = 0;
  for (const auto* job : jobs) width = std::max(width, job->name.size());
  os << "jobs:\n";
  if (jobs.empty()) os << "  (none linked into this build)\n";
  for (const auto* job : jobs) {
    os << "  " << job->name << std::string(width - job->name.size() + 2, ' ') << job->summary
       << "\n";
  }
}

void print_help(std::ostream& os) {
  os << "usage: shc <job> " << kUsageArgs << "\n"
     << "       shc --help | --version\n\n";
  print_jobs(os);
  os << "\n'shc <job> --help' lists a job's options. An option --section.key VALUE is written\n"
        "'key = VALUE' under a '[section]' header in an INI file given with --config; later\n"
        "files override earlier ones and the command line overrides every file. A bool option\n"
        "takes true/false, yes/no, on/off or 1/0; given alone (--log.all_ranks) it means true.\n";
}

void print_version(std::ostream& os) {
  os << "shc " << SHC_VERSION << "\n";
#ifdef SHC_WITH_NCCL
  // The library actually loaded, next to the header it was built with.
  os << "NCCL " << parallel::nccl_version() << " (built with " << NCCL_MAJOR << "." << NCCL_MINOR
     << "." << NCCL_PATCH << ")\n";
#endif
}

// Options every job accepts that may also come from an INI file.
void add_log_options(po::options_description& options) {
  options.add_options()  //
      ("log.level", po::value<std::string>()->default_value("info")->value_name("LEVEL"),
       "trace, debug, info, warning, error or fatal")  //
      ("log.all_ranks", po::value<bool>()->default_value(false, "false")->value_name("BOOL"),
       "every rank logs to the console, not only rank 0");
}

// Options that only make sense on the command line (a config file naming config files is not
// supported, so an INI file setting "config" is an unknown key).
void add_launcher_options(po::options_description& options) {
  options.add_options()  //
      ("config", po::value<std::vector<std::string>>()->value_name("FILE"),
       "INI file of [section] key = value lines; repeatable, later files override earlier ones "
       "and the command line overrides all")  //
      ("help,h", "print this help");
}

bool wants_help(const std::vector<std::string>& args) {
  return std::any_of(args.begin(), args.end(),
                     [](const std::string& a) { return a == "--help" || a == "-h"; });
}

// Boost needs a bool option's value as a separate token; this lets `--log.all_ranks` alone mean
// true while `--log.all_ranks false` keeps working: a "true" is inserted after a bool option
// that is not followed by a value.
std::vector<std::string> with_bool_values(const std::vector<std::string>& args,
                                          const po::options_description& options) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    out.push_back(arg);
    if (arg.size() <= 2 || arg.compare(0, 2, "--") != 0 || arg.find('=') != std::string::npos) {
      continue;
    }
    const po::option_description* option = options.find_nothrow(arg.substr(2), false);
    if (option == nullptr || option->semantic()->min_tokens() == 0 ||
        dynamic_cast<const po::typed_value<bool>*>(option->semantic().get()) == nullptr) {
      continue;
    }
    const bool has_value = i + 1 < args.size() && !args[i + 1].empty() && args[i + 1][0] != '-';
    if (!has_value) out.push_back("true");
  }
  return out;
}

// Throws UsageError for the first argument or key the options do not know. Parsing allows
// unregistered options precisely so that we can name them here, with a suggestion. where is ""
// for the command line, else " in config file 'x'".
void reject_unknown(const po::parsed_options& parsed, const po::options_description& options,
                    const std::string& where) {
  for (const auto& option : parsed.options) {
    if (!option.unregistered && !option.string_key.empty()) continue;
    const std::string token = option.original_tokens.empty() ? "" : option.original_tokens[0];
    if (where.empty() && (option.string_key.empty() || token.empty() || token[0] != '-')) {
      throw UsageError("unexpected argument '" + token +
                       "' (options are written --section.key value)");
    }
    std::string name = option.string_key.empty() ? token : option.string_key;
    name.erase(0, name.find_first_not_of('-'));
    throw UsageError("unknown option '" + name + "'" + where +
                     did_you_mean(name, option_names(options)));
  }
}

po::parsed_options parse_config_file(const std::string& file,
                                     const po::options_description& options) {
  const std::string where = " in config file '" + file + "'";
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) {
    throw UsageError("config file '" + file + "' is a directory");
  }
  std::ifstream in(file);
  if (!in) throw UsageError("cannot read config file '" + file + "'");
  try {
    auto parsed = po::parse_config_file(in, options, /*allow_unregistered=*/true);
    reject_unknown(parsed, options, where);
    return parsed;
  } catch (const po::error& e) {
    throw UsageError(e.what() + where);
  }
}

// The job, its parsed options, or nothing when only help was asked for (printed to out).
struct ReadyJob {
  std::unique_ptr<jobs::Job> job;
  po::variables_map vm;
};

ReadyJob prepare_job(const jobs::JobInfo& info, const std::vector<std::string>& args,
                     std::ostream& out) {
  ReadyJob ready;
  ready.job = info.make();
  jobs::Job* job = ready.job.get();
  po::options_description job_options(info.name + " options", jobs::kHelpLineLength,
                                      jobs::kHelpLineLength / 2);
  job->add_options(job_options);
  po::positional_options_description positional;
  job->add_positional(positional);

  // What an INI file may set, and what the command line may set (that plus --config, --help).
  po::options_description file_options;
  file_options.add(job_options);
  add_log_options(file_options);
  po::options_description common("common options", jobs::kHelpLineLength,
                                 jobs::kHelpLineLength / 2);
  add_launcher_options(common);
  add_log_options(common);
  po::options_description cli_options;
  cli_options.add(job_options).add(common);

  if (wants_help(args)) {
    out << "usage: shc " << info.name << " " << kUsageArgs << "\n"
        << info.summary << "\n"
        << cli_options << "\n";
    return {};
  }

  const auto style = po::command_line_style::default_style &
                     ~po::command_line_style::allow_guessing;  // no silent prefix matches
  po::command_line_parser parser(with_bool_values(args, cli_options));
  parser.options(cli_options).style(style).allow_unregistered();
  // Only jobs that take bare arguments get a positional map: for the others a bare word stays
  // unregistered, and reject_unknown names it.
  if (positional.max_total_count() > 0) parser.positional(positional);
  const po::parsed_options command_line = parser.run();
  reject_unknown(command_line, cli_options, "");

  // po::store keeps the first value it sees for an option, so precedence is set by the order:
  // the command line first, then the config files from the last one to the first one.
  po::variables_map& vm = ready.vm;
  po::store(command_line, vm);
  std::vector<std::string> files;
  if (vm.count("config")) files = vm["config"].as<std::vector<std::string>>();
  std::vector<po::parsed_options> parsed_files;
  for (const auto& file : files) parsed_files.push_back(parse_config_file(file, file_options));
  for (std::size_t i = files.size(); i-- > 0;) {
    try {
      po::store(parsed_files[i], vm);
    } catch (const po::error& e) {
      throw UsageError(e.what() + (" in config file '" + files[i] + "'"));
    }
  }
  po::notify(vm);

  jobs::init_logging(jobs::rank_from_environment(), vm["log.level"].as<std::string>(),
                     vm["log.all_ranks"].as<bool>());
  return ready;
}

// What the job ended with: its exit code (SPEC §8) and the message for the user.
struct Failure {
  int code;
  std::string message;
  bool show_help_hint;  // a usage error: point at `shc <job> --help`
};

Failure describe(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const UsageError& e) {
    return {jobs::kExitUsage, e.what(), true};
  } catch (const po::error& e) {
    return {jobs::kExitUsage, e.what(), true};
  } catch (const jobs::ExitError& e) {
    return {e.code(), e.what(), false};
  } catch (const data::DataError& e) {
    // Bad data, whichever job met it: the message names the file (SPEC §8, exit 3).
    return {jobs::kExitData, e.what(), false};
  } catch (const checkpoints::CheckpointError& e) {
    // A checkpoint that cannot be written or read (SPEC §8, exit 3); the message names the file.
    return {jobs::kExitData, e.what(), false};
  } catch (const std::filesystem::filesystem_error& e) {
    // I/O counts with data (exit 3): an unwritable run directory, a missing file.
    return {jobs::kExitData, e.what(), false};
  } catch (const std::invalid_argument& e) {
    // Configuration errors found past parsing, e.g. ModelConfig::validate().
    return {jobs::kExitUsage, e.what(), false};
  } catch (const std::exception& e) {
    return {1, e.what(), false};
  } catch (...) {
    return {1, "unknown exception", false};
  }
}

// The job being run, for the terminate handler's message.
std::string g_job_name;

// A multi-rank job runs with no handler above Job::run(): an exception that nothing catches
// ends in std::terminate *before any stack unwinding* (GCC and Clang search for a handler first,
// and unwind only if one exists), so no destructor can block on a collective that the peers will
// never join. This handler logs the failing rank's message and ends every rank with its code.
[[noreturn]] void end_job_on_uncaught_exception() {
  const std::exception_ptr error = std::current_exception();
  const Failure failure =
      error ? describe(error) : Failure{1, "std::terminate without an exception", false};
  jobs::log_fatal("shc " + g_job_name + ": " + failure.message);
  parallel::abort_job(failure.code);
}

}  // namespace

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  // Close enough: at most a third of the word's letters wrong, and never fewer than 2 edits
  // allowed, so short typos like "trian" -> "train" (a transposition is 2 edits) still match.
  const std::size_t limit = std::max<std::size_t>(2, word.size() / 3);
  std::string best;
  std::size_t best_distance = limit + 1;
  for (const auto& candidate : candidates) {
    std::size_t distance = edit_distance(word, candidate);
    const auto dot = candidate.find('.');
    if (word.find('.') == std::string::npos && dot != std::string::npos) {
      distance = std::min(distance, edit_distance(word, candidate.substr(dot + 1)));
    }
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  const std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  if (args.empty()) {
    err << "usage: shc <job> " << kUsageArgs << "\n\n";
    print_jobs(err);
    err << "\nRun 'shc --help' for more.\n";
    return jobs::kExitUsage;
  }
  const std::string& first = args[0];
  if (first == "--help" || first == "-h") {
    print_help(out);
    return jobs::kExitOk;
  }
  if (first == "--version") {
    print_version(out);
    return jobs::kExitOk;
  }
  if (first.empty() || first[0] == '-') {
    err << "shc: expected a job name before any option, got '" << first << "'\nusage: shc <job> "
        << kUsageArgs << "\nRun 'shc --help' to list the jobs.\n";
    return jobs::kExitUsage;
  }
  const jobs::JobInfo* info = jobs::JobRegistry::instance().find(first);
  if (info == nullptr) {
    err << "shc: unknown job '" << first << "'" << did_you_mean(first, job_names())
        << "\nRun 'shc --help' to list the jobs.\n";
    return jobs::kExitUsage;
  }

  const auto report = [&](const Failure& failure) {
    err << "shc " << info->name << ": " << failure.message << "\n";
    if (failure.show_help_hint) {
      err << "Run 'shc " << info->name << " --help' for its options.\n";
    }
    return failure.code;
  };
  ReadyJob ready;
  try {
    ready = prepare_job(*info, std::vector<std::string>(args.begin() + 1, args.end()), out);
  } catch (...) {
    return report(describe(std::current_exception()));
  }
  if (!ready.job) return jobs::kExitOk;  // --help
  if (jobs::world_size_from_environment() > 1) {
    // One rank's failure must end every rank promptly with its code (SPEC §5): see
    // end_job_on_uncaught_exception. Deliberately no try block here.
    g_job_name = info->name;
    std::set_terminate(end_job_on_uncaught_exception);
    return ready.job->run(ready.vm);
  }
  try {
    return ready.job->run(ready.vm);
  } catch (...) {
    return report(describe(std::current_exception()));
  }
}

}  // namespace shc::launch
