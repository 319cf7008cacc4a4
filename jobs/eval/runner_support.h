// What the benchmark runners (jobs/eval/benchmarks.h) share: reading the benchmark copies, where
// every failure is an ExitError(kExitData) whose message names the directory or file (so that a
// missing or broken copy stops `shc evaluate` with exit 3 instead of scoring 0), the shard check
// and the generation budget.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "jobs/eval/benchmarks.h"

namespace shc::jobs::eval {

// std::invalid_argument unless world >= 1 and 0 <= rank < world.
void check_shard(const Shard& shard);

// Prompt tokens left when the model must also take max_new_tokens generated ones:
// context_length - max_new_tokens. ExitError(kExitUsage) when that is < 1 or max_new_tokens < 1.
int64_t generation_budget(const std::string& benchmark, int64_t context_length,
                          int64_t max_new_tokens);

// ExitError(kExitUsage) when shots < 0.
void check_shots(const std::string& benchmark, int64_t shots);

// ExitError(kExitData) naming `path` when it is not a directory.
void require_directory(const std::string& benchmark, const std::string& path);

// The regular files in `dir` whose names end in `suffix`, sorted by name. ExitError when none do.
std::vector<std::string> files_ending_in(const std::string& benchmark, const std::string& dir,
                                         const std::string& suffix);

// The whole file. ExitError naming it (and the reason, e.g. that it does not exist) when it
// cannot be read.
std::string read_text_file(const std::string& benchmark, const std::string& path);

// Throws ExitError(kExitData, "<benchmark> file '<path>': <what>").
[[noreturn]] void file_error(const std::string& benchmark, const std::string& path,
                             const std::string& what);

// The file name without its directory and without `suffix` (".json", "_test.csv").
std::string task_name(const std::string& path, const std::string& suffix);

}  // namespace shc::jobs::eval
