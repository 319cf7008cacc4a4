// The loader (SPEC §6): sequence layout, a deterministic shuffled order per epoch, ranks that
// partition every global batch exactly, resuming from a global position at any world size,
// and clear errors naming the file.
#include <hdf5.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "data/loader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "tests/data_test_util.h"

namespace shc::data {
namespace {

using test::make_shard;
using test::TempDir;

constexpr int64_t kVocab = 1 << 20;  // uint32 shards whose token values are unique

// Shards whose tokens are their global token index, so a row's first token tells which
// sequence it is. first_token[s] is the first token of global sequence s.
struct Dataset {
  std::vector<std::string> files;
  std::vector<int64_t> first_token;
  int64_t seq_len = 0;
};

Dataset make_dataset(const TempDir& dir, const std::vector<int64_t>& sizes, int64_t seq_len,
                     const std::string& prefix = "train") {
  Dataset d;
  d.seq_len = seq_len;
  int64_t base = 0;
  for (size_t k = 0; k < sizes.size(); ++k) {
    std::vector<uint32_t> tokens(static_cast<size_t>(sizes[k]));
    for (int64_t i = 0; i < sizes[k]; ++i)
      tokens[static_cast<size_t>(i)] = static_cast<uint32_t>(base + i);
    d.files.push_back(dir.file(prefix + "-" + std::to_string(10000 + k) + ".h5"));
    make_shard(d.files.back(), tokens, kVocab, "test:v1", 0);
    for (int64_t j = 0; j < (sizes[k] - 1) / seq_len; ++j)
      d.first_token.push_back(base + j * seq_len);
    base += sizes[k];
  }
  return d;
}

LoaderOptions options_for(const Dataset& d, int64_t global_batch, uint64_t seed = 1, int rank = 0,
                          int world = 1) {
  LoaderOptions o;
  o.files = d.files;
  std::reverse(o.files.begin(), o.files.end());  // the loader sorts
  o.seq_len = d.seq_len;
  o.seed = seed;
  o.rank = rank;
  o.world_size = world;
  o.global_batch = global_batch;
  return o;
}

// Each row of a batch as its first token; checks that every row is seq_len + 1 consecutive
// tokens of one shard.
std::vector<int64_t> row_starts(const std::vector<int32_t>& batch, int64_t rows, int64_t seq_len) {
  EXPECT_EQ(static_cast<int64_t>(batch.size()), rows * (seq_len + 1));
  std::vector<int64_t> starts;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* row = batch.data() + r * (seq_len + 1);
    for (int64_t i = 1; i <= seq_len; ++i) EXPECT_EQ(row[i], row[0] + i);
    starts.push_back(row[0]);
  }
  return starts;
}

// The rows of `steps` global batches, as first tokens, for one rank.
std::vector<std::vector<int64_t>> run(Loader& loader, int steps) {
  std::vector<std::vector<int64_t>> out;
  for (int s = 0; s < steps; ++s) {
    out.push_back(row_starts(loader.next_batch(), loader.local_batch(), loader.seq_len()));
  }
  return out;
}

// The global batches of a world of `world` ranks, rank slices concatenated in rank order.
std::vector<std::vector<int64_t>> run_world(const Dataset& d, int64_t global_batch, int world,
                                            int steps, int64_t restore_to = -1, uint64_t seed = 1) {
  std::vector<std::vector<int64_t>> global(static_cast<size_t>(steps));
  for (int rank = 0; rank < world; ++rank) {
    Loader loader(options_for(d, global_batch, seed, rank, world));
    if (restore_to >= 0) loader.restore(restore_to);
    const auto mine = run(loader, steps);
    for (int s = 0; s < steps; ++s) {
      global[static_cast<size_t>(s)].insert(global[static_cast<size_t>(s)].end(),
                                            mine[static_cast<size_t>(s)].begin(),
                                            mine[static_cast<size_t>(s)].end());
    }
  }
  return global;
}

std::string loader_error(const LoaderOptions& o) {
  try {
    Loader loader(o);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

// Overwrites one token of a shard in place (the writer would refuse an out-of-vocab id).
void patch_token(const std::string& path, int64_t offset, uint32_t value) {
  std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  hid_t set = H5Dopen2(file, "tokens", H5P_DEFAULT);
  hid_t space = H5Dget_space(set);
  const hsize_t start = static_cast<hsize_t>(offset), one = 1;
  H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, nullptr, &one, nullptr);
  hid_t mem = H5Screate_simple(1, &one, nullptr);
  ASSERT_GE(H5Dwrite(set, H5T_NATIVE_UINT32, mem, space, H5P_DEFAULT, &value), 0);
  H5Sclose(mem);
  H5Sclose(space);
  H5Dclose(set);
  H5Fclose(file);
}

TEST(EpochPermutation, PortableAndSeeded) {
  // Fixed values: the order must not depend on the platform or the standard library.
  EXPECT_EQ(epoch_permutation(10, 42, 0), (std::vector<uint32_t>{6, 1, 8, 5, 2, 7, 4, 3, 9, 0}));
  EXPECT_EQ(epoch_permutation(10, 42, 1), (std::vector<uint32_t>{9, 0, 5, 3, 7, 2, 8, 1, 6, 4}));
  for (int64_t n : {0, 1, 2, 17, 1000}) {
    auto order = epoch_permutation(n, 5, 3);
    std::sort(order.begin(), order.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(order[static_cast<size_t>(i)], i);
  }
  EXPECT_EQ(epoch_permutation(1000, 5, 3), epoch_permutation(1000, 5, 3));
  EXPECT_NE(epoch_permutation(1000, 5, 3), epoch_permutation(1000, 6, 3));
  EXPECT_NE(epoch_permutation(1000, 5, 3), epoch_permutation(1000, 5, 4));
}

TEST(Loader, SequenceLayoutAndEpochs) {
  TempDir dir;
  // 15 + 12 + 1 + 7 = 35 sequences of 64 (+1) tokens; the third shard holds exactly one.
  const Dataset d = make_dataset(dir, {1000, 777, 65, 500}, 64);
  Loader loader(options_for(d, 5));
  EXPECT_EQ(loader.sequences_per_epoch(), 35);
  EXPECT_EQ(static_cast<int64_t>(d.first_token.size()), 35);
  EXPECT_EQ(loader.total_tokens(), 1000 + 777 + 65 + 500);
  EXPECT_EQ(loader.vocab_size(), kVocab);
  EXPECT_EQ(loader.eos_id(), 0);
  EXPECT_EQ(loader.tokenizer(), "test:v1");
  EXPECT_EQ(loader.local_batch(), 5);
  EXPECT_EQ(loader.files(), d.files);  // sorted

  std::vector<int64_t> epoch0, epoch1;
  for (int s = 0; s < 7; ++s) {
    EXPECT_EQ(loader.position(), s * 5);
    for (int64_t start : row_starts(loader.next_batch(), 5, 64)) epoch0.push_back(start);
  }
  EXPECT_EQ(loader.epoch(), 1);
  for (int s = 0; s < 7; ++s) {
    for (int64_t start : row_starts(loader.next_batch(), 5, 64)) epoch1.push_back(start);
  }
  EXPECT_EQ(loader.position(), 70);
  // Each epoch visits every sequence exactly once, in a shuffled order that changes.
  std::vector<int64_t> sorted0 = epoch0, sorted1 = epoch1;
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  EXPECT_EQ(sorted0, d.first_token);
  EXPECT_EQ(sorted1, d.first_token);
  EXPECT_NE(epoch0, d.first_token);
  EXPECT_NE(epoch0, epoch1);
  // The order is exactly the documented one.
  const auto order0 = epoch_permutation(35, 1, 0);
  for (size_t i = 0; i < 35; ++i) EXPECT_EQ(epoch0[i], d.first_token[order0[i]]);
}

TEST(Loader, DeterministicForASeedDifferentForAnother) {
  TempDir dir;
  const Dataset d = make_dataset(dir, {3000, 2000}, 32);
  Loader a(options_for(d, 8, 7)), b(options_for(d, 8, 7)), c(options_for(d, 8, 8));
  const auto run_a = run(a, 30), run_b = run(b, 30), run_c = run(c, 30);
  EXPECT_EQ(run_a, run_b);
  EXPECT_NE(run_a, run_c);
  EXPECT_NE(run_a[0], run_c[0]);
}

TEST(Loader, RanksPartitionEveryGlobalBatch) {
  TempDir dir;
  const Dataset d = make_dataset(dir, {1000, 777, 65, 500}, 64);  // 35 sequences
  const int64_t global_batch = 12;                                // divisible by 1, 2, 3, 4
  const int steps = 9;                                            // 108 positions: 3+ epochs
  const auto reference = run_world(d, global_batch, 1, steps);
  for (int world = 1; world <= 4; ++world) {
    const auto global = run_world(d, global_batch, world, steps);
    EXPECT_EQ(global, reference) << "world size " << world;
    // Over the first epoch (positions 0..34) the ranks together read each sequence once.
    std::vector<int64_t> first_epoch;
    for (int s = 0; s < steps; ++s) {
      for (int64_t i = 0; i < global_batch; ++i) {
        if (s * global_batch + i < 35) first_epoch.push_back(global[s][static_cast<size_t>(i)]);
      }
    }
    std::sort(first_epoch.begin(), first_epoch.end());
    EXPECT_EQ(first_epoch, d.first_token) << "world size " << world;
  }
  // And each rank reads a contiguous slice of its own.
  Loader rank1(options_for(d, global_batch, 1, 1, 3));
  EXPECT_EQ(rank1.local_batch(), 4);
  const auto mine = run(rank1, 1)[0];
  EXPECT_EQ(mine, std::vector<int64_t>(reference[0].begin() + 4, reference[0].begin() + 8));
}

TEST(Loader, RestoreContinuesExactlyAtAnyWorldSize) {
  TempDir dir;
  const Dataset d = make_dataset(dir, {1000, 777, 65, 500}, 64);
  const int64_t global_batch = 12;
  const auto reference = run_world(d, global_batch, 1, 10);
  const int k = 4;
  const std::vector<std::vector<int64_t>> tail(reference.begin() + k, reference.end());
  for (int world = 1; world <= 4; ++world) {
    EXPECT_EQ(run_world(d, global_batch, world, 10 - k, k * global_batch), tail)
        << "restored at world size " << world;
  }
  // A loader that already ran (and prefetched) ahead restores backwards and forwards.
  Loader loader(options_for(d, global_batch, 1, 1, 2));
  run(loader, 7);
  loader.restore(k * global_batch);
  EXPECT_EQ(loader.position(), k * global_batch);
  const auto again = run(loader, 2);
  EXPECT_EQ(again[0], std::vector<int64_t>(reference[k].begin() + 6, reference[k].end()));
  EXPECT_EQ(again[1], std::vector<int64_t>(reference[k + 1].begin() + 6, reference[k + 1].end()));
  loader.restore(9 * global_batch);
  EXPECT_EQ(run(loader, 1)[0], std::vector<int64_t>(reference[9].begin() + 6, reference[9].end()));
  loader.restore(0);
  EXPECT_EQ(run(loader, 1)[0], std::vector<int64_t>(reference[0].begin() + 6, reference[0].end()));
  EXPECT_THROW(loader.restore(5), std::invalid_argument);
  EXPECT_THROW(loader.restore(-12), std::invalid_argument);
}

TEST(Loader, TwoLoadersInOneProcess) {
  // Train and validation loaders side by side: each has its own thread, HDF5 is serialised.
  TempDir dir;
  const Dataset train = make_dataset(dir, {20000, 15000}, 128, "train");
  const Dataset val = make_dataset(dir, {4000}, 128, "val");
  std::vector<std::vector<int64_t>> train_alone, val_alone, train_both, val_both;
  {
    Loader t(options_for(train, 16, 3));
    train_alone = run(t, 40);
    Loader v(options_for(val, 4, 3));
    val_alone = run(v, 40);
  }
  Loader t(options_for(train, 16, 3)), v(options_for(val, 4, 3));
  for (int s = 0; s < 40; ++s) {
    train_both.push_back(run(t, 1)[0]);
    val_both.push_back(run(v, 1)[0]);
  }
  EXPECT_EQ(train_both, train_alone);
  EXPECT_EQ(val_both, val_alone);
}

TEST(Loader, ReadsPreparedByteData) {
  TempDir dir;
  test::write_file(dir.file("a.txt"), test::english_like_text(40000, 3));
  PrepareOptions p;
  p.inputs = {dir.file("a.txt")};
  p.output_dir = dir.file("data");
  p.shard_tokens = 10000;
  p.min_shard_tokens = 129;
  const PrepareResult prepared = prepare_dataset(p);
  LoaderOptions o;
  o.files = expand_glob(dir.file("data") + "/train-*.h5");
  EXPECT_EQ(o.files, prepared.train_files);
  o.seq_len = 128;
  o.global_batch = 4;
  o.expected_vocab = 257;
  Loader loader(o);
  EXPECT_EQ(loader.tokenizer(), "byte:v1");
  EXPECT_EQ(loader.eos_id(), 256);
  for (int s = 0; s < 5; ++s) {
    for (int32_t id : loader.next_batch()) ASSERT_TRUE(id >= 0 && id < 257);
  }
}

TEST(Loader, DestroysCleanlyAtAnyTime) {
  TempDir dir;
  const Dataset d = make_dataset(dir, {5000}, 16);
  for (int prefetch : {1, 4}) {
    LoaderOptions o = options_for(d, 4);
    o.prefetch_batches = prefetch;
    { Loader idle(o); }
    {
      Loader used(o);
      used.next_batch();
      used.restore(8);
    }
  }
}

TEST(LoaderErrors, BadOptions) {
  TempDir dir;
  const Dataset d = make_dataset(dir, {500}, 16);
  LoaderOptions o = options_for(d, 6, 1, 0, 4);  // 6 % 4 != 0
  EXPECT_THROW(Loader{o}, std::invalid_argument);
  o = options_for(d, 8, 1, 4, 4);  // rank outside the world
  EXPECT_THROW(Loader{o}, std::invalid_argument);
  o = options_for(d, 8);
  o.seq_len = 0;
  EXPECT_THROW(Loader{o}, std::invalid_argument);
  o = options_for(d, 8);
  o.files.clear();
  EXPECT_THROW(Loader{o}, std::invalid_argument);
}

TEST(LoaderErrors, MissingAndCorruptFiles) {
  TempDir dir;
  const Dataset d = make_dataset(dir, {500, 500}, 16);
  LoaderOptions o = options_for(d, 4);
  o.files.push_back(dir.file("missing.h5"));
  EXPECT_EQ(loader_error(o), "data file '" + dir.file("missing.h5") + "': no such file");
  test::write_file(dir.file("corrupt.h5"), std::string(4096, 'x'));
  o = options_for(d, 4);
  o.files.push_back(dir.file("corrupt.h5"));
  EXPECT_EQ(loader_error(o), "data file '" + dir.file("corrupt.h5") +
                                 "': not an HDF5 file (corrupt, truncated or not a shard)");
}

TEST(LoaderErrors, VocabularyDiffersFromTheModel) {
  TempDir dir;
  make_shard(dir.file("a.h5"), std::vector<uint32_t>(300, 5), 300, "byte:v1", 256);
  LoaderOptions o;
  o.files = {dir.file("a.h5")};
  o.seq_len = 16;
  o.global_batch = 2;
  o.expected_vocab = 257;
  EXPECT_EQ(loader_error(o), "data file '" + dir.file("a.h5") +
                                 "': vocab_size 300 differs from the model's vocab_size 257");
  o.expected_vocab = 300;
  EXPECT_EQ(loader_error(o), "");
}

TEST(LoaderErrors, ShardShorterThanOneSequence) {
  TempDir dir;
  make_shard(dir.file("a.h5"), std::vector<uint32_t>(1000, 5), 257);
  make_shard(dir.file("b.h5"), std::vector<uint32_t>(128, 5), 257);
  LoaderOptions o;
  o.files = {dir.file("a.h5"), dir.file("b.h5")};
  o.seq_len = 128;
  o.global_batch = 2;
  EXPECT_EQ(loader_error(o), "data file '" + dir.file("b.h5") +
                                 "': holds 128 tokens, fewer than one sequence (seq_len + 1 = 129 "
                                 "tokens)");
  o.seq_len = 127;
  EXPECT_EQ(loader_error(o), "");
}

TEST(LoaderErrors, ShardsFromDifferentTokenizers) {
  TempDir dir;
  make_shard(dir.file("a.h5"), std::vector<uint32_t>(1000, 5), 257, "byte:v1", 256);
  make_shard(dir.file("b.h5"), std::vector<uint32_t>(1000, 5), 257, "spm:0123456789abcdef", 2);
  LoaderOptions o;
  o.files = {dir.file("b.h5"), dir.file("a.h5")};
  o.seq_len = 16;
  o.global_batch = 2;
  EXPECT_EQ(loader_error(o), "data file '" + dir.file("b.h5") +
                                 "': vocab_size 257, tokenizer 'spm:0123456789abcdef', eos_id 2 "
                                 "differ from '" +
                                 dir.file("a.h5") +
                                 "' (vocab_size 257, tokenizer 'byte:v1', eos_id 256): the shards "
                                 "come from different tokenizers");
}

TEST(LoaderErrors, TokenIdOutOfVocabularyOnRead) {
  TempDir dir;
  make_shard(dir.file("a.h5"), std::vector<uint32_t>(1000, 5), 257, "byte:v1", 256);
  patch_token(dir.file("a.h5"), 700, 300);
  LoaderOptions o;
  o.files = {dir.file("a.h5")};
  o.seq_len = 10;
  o.global_batch = 1;  // one sequence per batch: the bad one is found at its own position
  o.seed = 11;
  Loader loader(o);  // validation does not read tokens
  const auto order = epoch_permutation(loader.sequences_per_epoch(), 11, 0);
  // The sequences holding offset 700: starts 690 (69) and 700 (70).
  int64_t bad_position = -1;
  for (size_t i = 0; i < order.size() && bad_position < 0; ++i) {
    if (order[i] == 69 || order[i] == 70) bad_position = static_cast<int64_t>(i);
  }
  for (int64_t p = 0; p < bad_position; ++p) loader.next_batch();
  for (int attempt = 0; attempt < 2; ++attempt) {  // the error stays until restore()
    try {
      loader.next_batch();
      FAIL() << "expected a DataError";
    } catch (const DataError& e) {
      EXPECT_EQ(std::string(e.what()), "data file '" + dir.file("a.h5") +
                                           "': token id 300 >= vocab_size 257 at offset 700");
    }
  }
  EXPECT_EQ(loader.position(), bad_position);
  loader.restore(0);
  EXPECT_EQ(loader.next_batch().size(), 11u);
}

TEST(ExpandGlob, SortedMatchesAndClearErrors) {
  TempDir dir;
  for (const char* name : {"train-00002.h5", "train-00000.h5", "train-00001.h5", "val-00000.h5"}) {
    test::write_file(dir.file(name), "x");
  }
  EXPECT_EQ(expand_glob(dir.file("train-*.h5")),
            (std::vector<std::string>{dir.file("train-00000.h5"), dir.file("train-00001.h5"),
                                      dir.file("train-00002.h5")}));
  EXPECT_EQ(expand_glob(dir.file("{val,train}-00000.h5")),
            (std::vector<std::string>{dir.file("train-00000.h5"), dir.file("val-00000.h5")}));
  EXPECT_EQ(expand_glob(dir.file("val-00000.h5")),
            std::vector<std::string>{dir.file("val-00000.h5")});
  EXPECT_EQ(expand_globs({dir.file("val-*.h5"), dir.file("*-00000.h5")}),
            (std::vector<std::string>{dir.file("train-00000.h5"), dir.file("val-00000.h5")}));
  try {
    expand_glob(dir.file("test-*.h5"));
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()), "no data files match '" + dir.file("test-*.h5") + "'");
  }
  try {
    expand_glob(dir.file("nope.h5"));
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()), "data file '" + dir.file("nope.h5") + "': no such file");
  }
}

}  // namespace
}  // namespace shc::data
