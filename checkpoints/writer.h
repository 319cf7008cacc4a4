// Saving a checkpoint from every rank (SPEC §7 commit protocol):
//   1. rank 0 creates RUN_DIR/checkpoints/.tmp-<N>/ (barrier);
//   2. every rank writes and fsyncs its rank<R>.safetensors — on the calling thread, or with
//      async = true on a background thread that first copies the state to host memory and then
//      writes the copy; training continues meanwhile and waits (wait_for_snapshot) only before
//      it next changes the state, i.e. only for what is left of the copy by then;
//   3. commit (collective): rank 0 gathers every rank's record (pieces, checksums, or the error
//      it met), fsyncs the directory, writes manifest.json last, renames .tmp-<N> to step_<N>
//      (atomically replacing an existing step_<N>), fsyncs, points `latest` at it (write-then-
//      rename) and applies retention; the outcome is broadcast, so every rank either continues or
//      throws the same CheckpointError.
// A crash at any point leaves the previous checkpoint as `latest` and never exposes a partial one.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "checkpoints/rank_state.h"

namespace shc::checkpoints {

struct SaveOptions {
  bool async = false;
  int keep_last = 2;       // newest step directories kept (>= 2: one may be mid-write)
  int64_t keep_every = 0;  // also keep steps that are multiples of this (0 = none)
};

class CheckpointWriter {
 public:
  CheckpointWriter(std::string run_dir, int rank, int world_size, SaveOptions options);
  // Joins a background write without committing it (the job is failing or has committed).
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Collective. Commits the previous save first (waiting for its write), then saves `state` as
  // step `step` with `run` as the manifest's run record. Synchronous: returns once committed.
  // Async: returns at once; the tensors of `state` must not change until wait_for_snapshot()
  // returns, and commit() finishes the save later.
  void save(int64_t step, const RankState& state, nlohmann::json run);
  // Returns once the pending async save holds its own host copy of the state (at once when none
  // is pending): call it before changing parameters or optimizer state.
  void wait_for_snapshot();
  // True while a save is written or waits for its commit.
  bool pending() const { return pending_; }
  // True when this rank's part of the pending save is written (or failed).
  bool written() const { return written_.load(); }
  // Collective: waits for this rank's write, then commits (protocol step 3). CheckpointError on
  // every rank when any rank failed; `latest` is then unchanged. No-op without a pending save.
  void commit();
  // What went wrong in housekeeping after the last commit (rank 0; "" if nothing), e.g. an old
  // checkpoint that retention could not remove.
  const std::string& warning() const { return warning_; }
  // The directory of the last committed checkpoint ("" before the first).
  const std::string& last_committed() const { return last_committed_; }
  // Seconds the caller was blocked by the last save() and wait_for_snapshot().
  double last_blocking_seconds() const { return last_blocking_seconds_; }

 private:
  void write_rank_file(const RankState& state);

  std::string run_dir_;
  int rank_, world_size_;
  SaveOptions options_;
  int64_t step_ = 0;
  nlohmann::json run_;
  bool pending_ = false;
  std::atomic<bool> written_{false};
  std::future<void> snapshot_;  // ready once the background thread holds its host copy
  std::string record_;          // this rank's JSON record for the manifest, or {"error": ...}
  std::thread thread_;
  std::string last_committed_;
  std::string warning_;
  double last_blocking_seconds_ = 0;
};

}  // namespace shc::checkpoints
