// Checkpoint save and load throughput against the disk's sequential write speed, and the training
// loop's blocking time of an async save against a sync one (issue 8, SPEC §12: save >= 0.5x the
// disk's speed, async blocking <= 10 % of a sync save). An async save copies the state to host
// memory on its own thread; the trainer waits for that copy only before its next optimizer step,
// so the blocking time is measured both with a forward + backward of 4 x 128 tokens in between
// (what training does) and with none (the bare copy, the worst case).
//
//   build/bin/checkpoint_bench --preset small --dir /tmp/shc_ckpt_bench --out ckpt.json
//   mpirun -np 2 build/bin/checkpoint_bench --preset 500m ...   (every rank writes 1/N)
//
// A save writes the model's fp32 parameters and AdamW's two moments (12 bytes per parameter)
// through the same CheckpointWriter `shc train` uses (temp dir, fsync, manifest, rename, latest).
// The disk's speed is `dd if=/dev/zero bs=16M conv=fsync` of the same number of bytes into the
// same directory, in the same run, before and after the saves. Loads read back the latest
// checkpoint with checksums verified; when this process may write /proc/sys/vm/drop_caches the page
// cache is dropped first (else the load figure is from memory, and the report says so).
#include <torch/torch.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "bench/bench_util.h"
#include "checkpoints/layout.h"
#include "checkpoints/manifest.h"
#include "checkpoints/rank_state.h"
#include "checkpoints/restore.h"
#include "checkpoints/writer.h"
#include "core/transformer.h"
#include "jobs/train_step.h"
#include "parallel/runtime.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

int64_t directory_bytes(const std::string& dir) {
  int64_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) bytes += int64_t(e.file_size());
  }
  return bytes;
}

// Sequential write speed of the disk under `dir` in bytes/s: dd of `bytes` bytes with fsync.
double dd_bytes_per_second(const std::string& dir, int64_t bytes) {
  const std::string file = dir + "/dd.bin";
  const int64_t blocks = std::max<int64_t>(1, bytes >> 24);
  const std::string command = "dd if=/dev/zero of=" + file +
                              " bs=16M count=" + std::to_string(blocks) + " conv=fsync status=none";
  const auto start = Clock::now();
  if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
  const double seconds = seconds_since(start);
  fs::remove(file);
  return double(blocks << 24) / seconds;
}

bool drop_page_cache() {
  ::sync();
  std::ofstream drop("/proc/sys/vm/drop_caches");
  drop << "3\n";
  drop.flush();
  return bool(drop);
}

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "small", dir = "/tmp/shc_checkpoint_bench", out;
  int repeats = 3;
  try {
    shc::bench::parse_options(
        argc, argv,
        "usage: checkpoint_bench [--preset small] [--dir DIR] [--repeats 3] [--out FILE.json]",
        [&](const std::string& key, const std::string& value) {
          if (key == "--preset")
            preset = value;
          else if (key == "--dir")
            dir = value;
          else if (key == "--repeats")
            repeats = std::stoi(value);
          else if (key == "--out")
            out = value;
          else
            return false;
          return true;
        });
  } catch (const shc::bench::HelpRequested& help) {
    std::cout << help.what() << "\n";
    return 0;
  }
  auto& runtime = shc::parallel::Runtime::instance();
  const int rank = runtime.rank(), world = runtime.world_size();
  if (rank == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  runtime.barrier();

  torch::manual_seed(0);
  shc::SHCTransformer model(shc::get_config(preset));
  shc::parallel::NamedParameters named;
  for (const auto& item : model->named_parameters()) named.emplace_back(item.key(), item.value());
  auto optimizer = shc::jobs::make_adamw(named, shc::jobs::AdamWSettings{});
  auto state = shc::checkpoints::replicated_state(named, *optimizer, rank, world);
  const nlohmann::json run = {{"bench", "checkpoint_bench"}, {"preset", preset}};

  // What a training step does between a save and its next optimizer step: forward + backward.
  const auto ids = torch::randint(0, model->config().vocab_size, {4, 129}, torch::kLong);
  auto forward_backward = [&] { model->forward(ids, ids).backward(); };

  // Median over `repeats` saves of (seconds the caller was blocked, seconds until committed).
  // overlap = false waits for the async copy at once (the worst case: nothing to hide it behind).
  auto timed_saves = [&](bool async, bool overlap, const std::string& run_dir) {
    shc::checkpoints::CheckpointWriter writer(run_dir, rank, world, {async, 2, 0});
    std::vector<double> blocking, total;
    for (int i = 1; i <= repeats; ++i) {
      runtime.barrier();
      const auto start = Clock::now();
      writer.save(i, state, run);
      double blocked = seconds_since(start);
      if (overlap) forward_backward();
      const auto wait = Clock::now();
      writer.wait_for_snapshot();
      blocked += seconds_since(wait);
      blocking.push_back(blocked);
      writer.commit();
      total.push_back(seconds_since(start));
    }
    const auto worst =
        shc::bench::over_ranks({shc::bench::median(blocking), shc::bench::median(total)}, MPI_MAX);
    return std::make_pair(worst[0], worst[1]);
  };

  // The disk's speed before and after the saves (it varies between runs on a shared disk); the
  // ratio is taken against the faster of the two.
  int64_t state_bytes = 0;
  for (const auto& slice : state.slices) state_bytes += slice.data.nbytes();
  double dd_before = 0;
  if (rank == 0) dd_before = dd_bytes_per_second(dir, state_bytes * world);
  const double sync_total = timed_saves(false, false, dir + "/sync").second;
  const auto [async_copy_blocking, async_total] = timed_saves(true, false, dir + "/async");
  const double async_blocking = timed_saves(true, true, dir + "/async_overlap").first;
  auto step_start = Clock::now();
  forward_backward();
  const double step_seconds = seconds_since(step_start);
  const std::string latest = shc::checkpoints::step_dir(dir + "/sync", repeats);
  const int64_t bytes = directory_bytes(latest);

  double dd_after = 0;
  if (rank == 0) dd_after = dd_bytes_per_second(dir, bytes);
  const double dd = std::max(dd_before, dd_after);
  const bool cold = drop_page_cache();
  runtime.barrier();
  const auto manifest = shc::checkpoints::read_manifest(latest);
  const auto load_start = Clock::now();
  shc::checkpoints::load_into(latest, manifest, state, rank);
  const double load_seconds = shc::bench::over_ranks({seconds_since(load_start)}, MPI_MAX)[0];

  if (rank == 0) {
    const double save_rate = double(bytes) / sync_total;
    // Every rank of a replicated run reads the whole model back.
    const double load_rate = double(bytes) * world / load_seconds;
    const nlohmann::json report = {
        {"preset", preset},
        {"world_size", world},
        {"checkpoint_bytes", bytes},
        {"dd_write_bytes_per_s_before", dd_before},
        {"dd_write_bytes_per_s_after", dd_after},
        {"sync_save_seconds", sync_total},
        {"sync_save_bytes_per_s", save_rate},
        {"save_vs_dd", save_rate / dd},
        {"async_copy_seconds", async_copy_blocking},
        {"async_copy_vs_sync", async_copy_blocking / sync_total},
        {"forward_backward_seconds", step_seconds},
        {"async_blocking_after_forward_backward_seconds", async_blocking},
        {"async_blocking_vs_sync", async_blocking / sync_total},
        {"async_total_seconds", async_total},
        {"load_seconds", load_seconds},
        {"load_bytes_per_s", load_rate},
        {"load_from_cold_cache", cold}};
    std::cout << report.dump(2) << "\n";
    if (!out.empty()) std::ofstream(out) << report.dump(2) << "\n";
  }
  runtime.barrier();
  if (rank == 0) fs::remove_all(dir);
  return 0;
}
