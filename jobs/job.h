// Jobs: the subcommands of `shc` (SPEC §8). Each job is a class that declares its options and
// runs; a job's .cpp registers itself with SHC_REGISTER_JOB, so adding a job touches no other
// job and the CLI lists exactly what is linked in.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

namespace shc::jobs {

namespace po = boost::program_options;

// Line width of `--help` text; option groups a job builds itself should use it too:
// po::options_description group("caption", kHelpLineLength, kHelpLineLength / 2).
inline constexpr unsigned kHelpLineLength = 100;

// Process exit codes (SPEC §8). Schedulers and sbatch scripts act on these, so they are fixed.
enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 2,       // bad command line, config file or model config
  kExitData = 3,        // data set or checkpoint error
  kExitNumerical = 4,   // NaN/Inf that the step guard gave up on
  kExitTimeout = 5,     // collective watchdog fired
  kExitPreempted = 75,  // checkpointed on a signal; requeue (EX_TEMPFAIL)
};

// Thrown by jobs for failures that have their own exit code, e.g.
// `throw ExitError(kExitData, "shard 'x.h5': token id 300 >= vocab 257")`. The CLI prints the
// message and exits with the code.
class ExitError : public std::runtime_error {
 public:
  ExitError(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

class Job {
 public:
  virtual ~Job();
  // Declares the job's own options, named "section.key" (e.g. "train.lr"); the same name is
  // `--train.lr` on the command line and `lr` under `[train]` in an INI file.
  virtual void add_options(po::options_description& options) const = 0;
  // Options that may also be given as bare arguments, in order (e.g. `shc inspect PATH` for
  // --path); most jobs have none.
  virtual void add_positional(po::positional_options_description& positional) const {
    (void)positional;
  }
  // Runs with every option parsed and notified; returns the exit code (normally kExitOk).
  virtual int run(const po::variables_map& vm) = 0;
};

struct JobInfo {
  std::string name;     // the subcommand, e.g. "train"
  std::string summary;  // one line for `shc --help`
  std::function<std::unique_ptr<Job>()> make;
};

// All jobs linked into the program. Filled during static initialisation (see SHC_REGISTER_JOB);
// read-only afterwards, so no locking.
class JobRegistry {
 public:
  static JobRegistry& instance();
  // Throws std::logic_error on a duplicate name: two jobs answering to one name is a build bug.
  void add(JobInfo info);
  // nullptr when no job has this name.
  const JobInfo* find(const std::string& name) const;
  // Every job, sorted by name.
  std::vector<const JobInfo*> list() const;

 private:
  JobRegistry() = default;
  std::map<std::string, JobInfo> jobs_;  // sorted by name, stable addresses
};

// Registers a job from a namespace-scope static object's constructor.
struct JobRegistrar {
  explicit JobRegistrar(JobInfo info);
};

}  // namespace shc::jobs

#define SHC_JOBS_CONCAT_INNER(a, b) a##b
#define SHC_JOBS_CONCAT(a, b) SHC_JOBS_CONCAT_INNER(a, b)

// One statement at namespace scope in the job's .cpp:
//   SHC_REGISTER_JOB(ProfileJob, "profile", "step-time breakdown and routing benchmark");
// The job files are compiled into an OBJECT library (shc_jobs), so the linker keeps these
// registrars even though nothing refers to them by name.
#define SHC_REGISTER_JOB(JobClass, name, summary)                                       \
  static const ::shc::jobs::JobRegistrar SHC_JOBS_CONCAT(shc_job_registrar_, __LINE__)( \
      ::shc::jobs::JobInfo{name, summary, []() -> std::unique_ptr<::shc::jobs::Job> {   \
                             return std::make_unique<JobClass>();                       \
                           }})
