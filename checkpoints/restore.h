// Loading a checkpoint into a rank's state (SPEC §7 resume and resharding): every slice the rank
// holds now is filled from the stored pieces that overlap it, whatever world size and strategy
// wrote them, and every piece read is checked against its checksum first.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "checkpoints/manifest.h"
#include "checkpoints/rank_state.h"

namespace shc::checkpoints {

// Fills every slice of `state` from checkpoint `dir` and replaces state.rank_tensors with this
// rank's stored ones (left empty when the checkpoint had no rank `rank`, or rank < 0: a reader
// that wants the model only). Not collective.
// CheckpointError naming the file and tensor: "checksum mismatch", a tensor the checkpoint lacks,
// a different global shape, pieces that do not cover a slice, a truncated file.
void load_into(const std::string& dir, const Manifest& manifest, RankState& state, int rank);

// Reads every stored tensor of checkpoint `dir` (pieces and rank-local tensors) and checks it
// against its checksum; returns how many were checked. CheckpointError ("checksum mismatch",
// naming file and tensor) at the first that differs.
int64_t verify_checkpoint(const std::string& dir, const Manifest& manifest);

// The checkpoints of a run to try for a resume, best first: the one `latest` names, then every
// other step_<N> directory by decreasing N.
std::vector<std::string> resume_candidates(const std::string& run_dir);

struct Resumed {
  std::string dir;
  Manifest manifest;
};

// Collective. Tries rank 0's `candidates` in order and loads the first that every rank reads
// without error; all ranks take the same decision. For each one that fails, `report` receives (on
// rank 0) what every failing rank met, e.g. "checksum mismatch in '.../rank00001.safetensors'
// tensor 'model/...'". `check` runs on each manifest before any tensor is read: a CheckpointError
// or a JSON error from it counts as corruption (fall back); anything else (e.g. an ExitError for
// a different model config) stops the resume outright. With `strict`, the first failure throws
// CheckpointError instead of falling back. nullopt when none loads; `state` may then hold parts
// of a failed attempt.
std::optional<Resumed> resume(std::vector<std::string> candidates, bool strict,
                              const std::function<void(const Manifest&)>& check, RankState& state,
                              int rank, const std::function<void(const std::string&)>& report);

}  // namespace shc::checkpoints
