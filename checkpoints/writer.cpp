#include "checkpoints/writer.h"

#include <fcntl.h>
#include <stdio.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "checkpoints/errors.h"
#include "checkpoints/file_io.h"
#include "checkpoints/layout.h"
#include "checkpoints/manifest.h"
#include "checkpoints/safetensors.h"
#include "parallel/runtime.h"

namespace shc::checkpoints {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A copy of `state` in host memory, detached from the live tensors, for a background write.
RankState copy_to_host(const RankState& state) {
  RankState copy = state;
  for (auto& s : copy.slices)
    s.data = s.data.to(torch::kCPU, /*non_blocking=*/false, /*copy=*/true);
  for (auto& [name, t] : copy.rank_tensors) t = t.to(torch::kCPU, false, true);
  return copy;
}

// Moves the complete directory `from` to `to`. An existing `to` (a checkpoint saved again after
// a fallback) is swapped out atomically with renameat2(RENAME_EXCHANGE) and then removed; where
// the filesystem cannot exchange, it is renamed aside first (a crash in between leaves `latest`
// naming a missing directory, and resume falls back to the newest complete one).
void install_directory(const std::string& from, const std::string& to) {
  if (!fs::exists(to)) {
    fs::rename(from, to);
    return;
  }
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(from);  // now the replaced checkpoint
    return;
  }
  const std::string aside = to + ".replaced";
  fs::remove_all(aside);
  fs::rename(to, aside);
  fs::rename(from, to);
  fs::remove_all(aside);
}

}  // namespace

CheckpointWriter::CheckpointWriter(std::string run_dir, int rank, int world_size,
                                   SaveOptions options)
    : run_dir_(std::move(run_dir)), rank_(rank), world_size_(world_size), options_(options) {}

CheckpointWriter::~CheckpointWriter() {
  if (thread_.joinable()) thread_.join();
}

void CheckpointWriter::save(int64_t step, const RankState& state, json run) {
  commit();
  const auto start = std::chrono::steady_clock::now();
  auto& runtime = parallel::Runtime::instance();
  std::string setup_error;
  if (rank_ == 0) {
    try {
      fs::create_directories(checkpoints_dir(run_dir_));
      // Leftovers of saves that never committed, of a replacement cut short, or of a `latest`
      // update cut short (a crash), are garbage: nothing refers to them.
      for (const auto& entry : fs::directory_iterator(run_dir_)) {
        if (entry.path().filename().string().rfind("latest.tmp.", 0) == 0) fs::remove(entry.path());
      }
      for (const auto& entry : fs::directory_iterator(checkpoints_dir(run_dir_))) {
        const std::string name = entry.path().filename().string();
        const std::string replaced = ".replaced";
        const bool is_replaced =
            name.rfind("step_", 0) == 0 && name.size() > replaced.size() &&
            name.compare(name.size() - replaced.size(), replaced.size(), replaced) == 0;
        if (name.rfind(".tmp-", 0) == 0 || is_replaced) fs::remove_all(entry.path());
      }
      fs::create_directory(temporary_dir(run_dir_, step));
    } catch (const std::exception& e) {
      setup_error =
          std::string("cannot save checkpoint step ") + std::to_string(step) + ": " + e.what();
    }
  }
  runtime.broadcast_string(setup_error);
  if (!setup_error.empty()) throw CheckpointError(setup_error);

  step_ = step;
  run_ = std::move(run);
  warning_.clear();
  pending_ = true;
  written_ = false;
  record_.clear();
  if (options_.async) {
    std::promise<void> snapshot;
    snapshot_ = snapshot.get_future();
    thread_ = std::thread([this, state, snapshot = std::move(snapshot)]() mutable {
      RankState host;
      try {
        host = copy_to_host(state);
      } catch (const std::exception& e) {
        record_ = json{{"rank", rank_}, {"error", std::string("copy to host: ") + e.what()}}.dump();
      }
      snapshot.set_value();
      if (record_.empty()) write_rank_file(host);
      written_ = true;
    });
  } else {
    write_rank_file(state);
    written_ = true;
    commit();
  }
  last_blocking_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void CheckpointWriter::wait_for_snapshot() {
  if (!snapshot_.valid()) return;
  const auto start = std::chrono::steady_clock::now();
  snapshot_.get();
  last_blocking_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void CheckpointWriter::write_rank_file(const RankState& state) {
  const std::string file = rank_file_name(rank_);
  try {
    NamedTensors tensors;
    json pieces = json::array();
    for (const auto& s : state.slices) {
      // This rank's part of a slice held by `replicas` ranks.
      const int64_t n = s.data.numel(), part = (n + state.replicas - 1) / state.replicas;
      const int64_t begin = std::min(n, state.replica_index * part);
      const int64_t end = std::min(n, begin + part);
      if (end <= begin) continue;
      tensors.emplace_back(s.name, s.data.narrow(0, begin, end - begin));
      pieces.push_back({{"name", s.name},
                        {"shape", s.shape},
                        {"dtype", std::string(dtype_name(s.data.scalar_type()))},
                        {"offset", s.offset + begin},
                        {"numel", end - begin}});
    }
    for (const auto& [name, t] : state.rank_tensors) tensors.emplace_back(name, t);
    const auto sums = write_safetensors(temporary_dir(run_dir_, step_) + "/" + file, tensors,
                                        {{"format", "shc-checkpoint-shard"},
                                         {"rank", std::to_string(rank_)},
                                         {"step", std::to_string(step_)}});
    json rank_tensors = json::object();
    for (size_t i = 0; i < sums.size(); ++i) {
      if (i < pieces.size()) {
        pieces[i]["checksum"] = sums[i];
      } else {
        rank_tensors[tensors[i].first] = sums[i];
      }
    }
    record_ =
        json{{"rank", rank_}, {"file", file}, {"pieces", pieces}, {"rank_tensors", rank_tensors}}
            .dump();
  } catch (const std::exception& e) {
    record_ = json{{"rank", rank_}, {"error", e.what()}}.dump();
  }
}

void CheckpointWriter::commit() {
  if (!pending_) return;
  if (thread_.joinable()) thread_.join();
  if (snapshot_.valid()) snapshot_.get();
  auto& runtime = parallel::Runtime::instance();
  const auto records = runtime.gather_strings(record_);
  pending_ = false;
  const std::string tmp = temporary_dir(run_dir_, step_), dir = step_dir(run_dir_, step_);
  std::string outcome;
  if (rank_ == 0) {
    try {
      Manifest manifest;
      manifest.step = step_;
      manifest.world_size = world_size_;
      manifest.run = run_;
      manifest.ranks.resize(records.size());
      std::string errors;
      for (const auto& text : records) {
        const json r = json::parse(text);
        const int rank = r.at("rank").get<int>();
        if (r.contains("error")) {
          errors += (errors.empty() ? "" : "; ") + ("rank " + std::to_string(rank) + ": ") +
                    r.at("error").get<std::string>();
          continue;
        }
        const std::string file = r.at("file").get<std::string>();
        manifest.ranks.at(rank) = {file,
                                   r.at("rank_tensors").get<std::map<std::string, std::string>>()};
        for (const auto& p : r.at("pieces")) {
          auto& record = manifest.tensors[p.at("name").get<std::string>()];
          record.shape = p.at("shape").get<std::vector<int64_t>>();
          record.dtype = p.at("dtype").get<std::string>();
          record.pieces.push_back({file, p.at("offset").get<int64_t>(),
                                   p.at("numel").get<int64_t>(),
                                   p.at("checksum").get<std::string>()});
        }
      }
      if (!errors.empty()) throw CheckpointError(errors);
      for (auto& [name, record] : manifest.tensors) {
        std::sort(record.pieces.begin(), record.pieces.end(),
                  [](const Piece& a, const Piece& b) { return a.offset < b.offset; });
      }
      fsync_path(tmp);
      write_manifest(tmp, manifest);
      install_directory(tmp, dir);
    } catch (const std::exception& e) {
      outcome = "checkpoint step " + std::to_string(step_) + " was not saved (" +
                latest_file(run_dir_) + " is unchanged): " + e.what();
      std::error_code ignored;
      fs::remove_all(tmp, ignored);
    }
    if (outcome.empty()) {
      // The checkpoint is complete under its final name; what remains is to point `latest` at
      // it (a resume also finds it without: it is the newest step_* directory).
      try {
        fsync_path(checkpoints_dir(run_dir_));
        write_latest(run_dir_, dir);
      } catch (const std::exception& e) {
        outcome = "checkpoint step " + std::to_string(step_) + " was saved to " + dir + ", but " +
                  latest_file(run_dir_) + " could not be updated: " + e.what();
      }
    }
    if (outcome.empty()) {
      // Retention is housekeeping: a directory that cannot be removed (e.g. an NFS .nfs* file
      // still open) is reported, not fatal.
      try {
        apply_retention(run_dir_, options_.keep_last, options_.keep_every, dir);
      } catch (const std::exception& e) {
        warning_ = std::string("retention after step ") + std::to_string(step_) + ": " + e.what();
      }
    }
  }
  runtime.broadcast_string(outcome);
  if (!outcome.empty()) throw CheckpointError(outcome);
  last_committed_ = dir;
}

}  // namespace shc::checkpoints
