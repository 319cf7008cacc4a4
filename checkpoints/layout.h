// Where checkpoints live in a run directory (SPEC §7):
//   RUN_DIR/checkpoints/step_<N>/   manifest.json + rank<R>.safetensors, complete once renamed here
//   RUN_DIR/checkpoints/.tmp-<N>/   a save in progress (never matches step_*)
//   RUN_DIR/latest                  "checkpoints/step_<N>": the newest committed checkpoint
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shc::checkpoints {

std::string checkpoints_dir(const std::string& run_dir);
std::string step_dir(const std::string& run_dir, int64_t step);
std::string temporary_dir(const std::string& run_dir, int64_t step);
std::string latest_file(const std::string& run_dir);
std::string rank_file_name(int rank);  // "rank00003.safetensors"

// The step of a directory named step_<N> (any parent); nullopt for other names.
std::optional<int64_t> step_of(const std::string& dir);
// Every step_<N> directory of the run, by increasing N (complete or not).
std::vector<std::string> step_dirs(const std::string& run_dir);
// The directory RUN_DIR/latest names (resolved against RUN_DIR); nullopt when there is no latest.
std::optional<std::string> read_latest(const std::string& run_dir);
// Points RUN_DIR/latest at `dir` (write-then-rename, fsynced).
void write_latest(const std::string& run_dir, const std::string& dir);

// Retention after a save: removes step directories other than the newest `keep_last`, those whose
// step is a multiple of `keep_every` (0 = none) and `protect` (what latest names).
std::vector<std::string> apply_retention(const std::string& run_dir, int keep_last,
                                         int64_t keep_every, const std::string& protect);

}  // namespace shc::checkpoints
