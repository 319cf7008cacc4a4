// Loader throughput (SPEC §12: the HDF5 loader must keep up with >= 100x what training consumes).
// Writes its own shards (byte vocabulary, uint16, 4 x 4M tokens) into a temporary directory,
// then measures tokens/s delivered by Loader::next_batch() with the prefetch thread, for a few
// sequence lengths, batch sizes and world sizes, and the raw ShardReader read rate.
//   loader_bench [--benchmark_filter=...] [--benchmark_min_time=...]
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "data/loader.h"
#include "data/shard.h"

namespace {

namespace fs = std::filesystem;

constexpr int kShards = 4;
constexpr int64_t kShardTokens = int64_t{1} << 22;

std::vector<std::string> g_files;

void make_shards(const fs::path& dir) {
  uint64_t state = 12345;
  std::vector<uint32_t> tokens(static_cast<size_t>(kShardTokens));
  for (int s = 0; s < kShards; ++s) {
    for (auto& t : tokens) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      t = static_cast<uint32_t>((state >> 33) % 257);
    }
    const std::string path = (dir / ("train-0000" + std::to_string(s) + ".h5")).string();
    shc::data::ShardWriter writer(path, 257, "byte:v1", 256);
    writer.append(tokens);
    writer.close();
    g_files.push_back(path);
  }
}

// Args: seq_len, global batch, world size (the loader is rank 0 of that world).
void BM_LoaderNextBatch(benchmark::State& state) {
  shc::data::LoaderOptions o;
  o.files = g_files;
  o.seq_len = state.range(0);
  o.global_batch = state.range(1);
  o.world_size = static_cast<int>(state.range(2));
  o.rank = 0;
  o.seed = 1;
  o.expected_vocab = 257;
  shc::data::Loader loader(o);
  int64_t tokens = 0;
  for (auto _ : state) {
    auto batch = loader.next_batch();
    benchmark::DoNotOptimize(batch.data());
    tokens += static_cast<int64_t>(batch.size());
  }
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
  state.counters["local_batch"] = static_cast<double>(loader.local_batch());
}
BENCHMARK(BM_LoaderNextBatch)
    ->ArgNames({"seq_len", "global_batch", "world"})
    ->Args({256, 32, 1})
    ->Args({1024, 8, 1})
    ->Args({1024, 32, 1})
    ->Args({1024, 32, 4})
    ->Args({2048, 64, 1})
    ->UseRealTime();

// One contiguous read of `count` tokens at a random-ish offset: the HDF5 read path alone.
void BM_ShardReaderRead(benchmark::State& state) {
  shc::data::ShardReader reader(g_files.front());
  const int64_t count = state.range(0);
  std::vector<uint32_t> buffer(static_cast<size_t>(count));
  int64_t offset = 0, tokens = 0;
  for (auto _ : state) {
    offset = (offset + 7919 * count) % (kShardTokens - count);
    reader.read_range(offset, count, buffer.data());
    benchmark::DoNotOptimize(buffer.data());
    tokens += count;
  }
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ShardReaderRead)->ArgName("tokens")->Arg(257)->Arg(1025)->Arg(1 << 16);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const fs::path dir =
      fs::temp_directory_path() / ("shc-loader-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  int rc = 0;
  try {
    make_shards(dir);
    benchmark::RunSpecifiedBenchmarks();
  } catch (const std::exception& e) {
    fprintf(stderr, "loader_bench: %s\n", e.what());
    rc = 1;
  }
  benchmark::Shutdown();
  std::error_code ec;
  fs::remove_all(dir, ec);
  return rc;
}
