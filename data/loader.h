// The training data loader (SPEC §6): fixed-length sequences from HDF5 token shards, in a
// shuffled order that depends only on the seed, each rank reading only its own part, with one
// background thread that alone calls HDF5.
//
// Sequences: windows of seq_len + 1 tokens at stride seq_len inside each shard (never spanning
// two shards; a shard's last seq_len tokens at most are not used), numbered globally over the
// sorted file list; S = sequences_per_epoch(). Epoch e visits them in epoch_permutation(S, seed,
// e) order. Global position p (a count of sequences consumed by all ranks together) is sequence
// epoch_permutation(S, seed, p / S)[p % S]. Each call of next_batch() consumes one global batch of
// B = global_batch positions [p, p + B); rank r gets the contiguous slice [p + r*B/W,
// p + (r+1)*B/W). So a global batch is the same set of sequences whatever the world size W, the
// ranks partition it exactly, and a position saved at one world size restores at another.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/errors.h"

namespace shc::data {

struct LoaderOptions {
  std::vector<std::string> files;  // shard paths (e.g. from expand_glob); sorted by the loader
  int64_t seq_len = 0;             // tokens per sequence; each row holds seq_len + 1
  uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
  int64_t global_batch = 0;     // sequences per optimizer step, divisible by world_size
  int64_t expected_vocab = -1;  // the model's vocab_size; -1 = don't check
  int prefetch_batches = 4;     // batches the thread keeps ready
};

class Loader {
 public:
  // Opens and validates every file on the prefetch thread; its DataError (naming the file) is
  // rethrown here. std::invalid_argument for inconsistent options.
  explicit Loader(LoaderOptions options);
  // Stops the thread, which closes the files.
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // This rank's part of the next global batch: local_batch() rows of seq_len() + 1 tokens,
  // row-major. Rethrows a read error of the thread (DataError naming file and offset); after
  // one, every call throws it again until restore(). Call from one thread.
  std::vector<int32_t> next_batch();

  // Continue from a global position (sequences consumed by all ranks), e.g. saved by a run with
  // another world size. Must be a multiple of global_batch (std::invalid_argument otherwise).
  // Drops what was prefetched.
  void restore(int64_t position);

  int64_t position() const { return position_; }
  int64_t epoch() const { return position_ / sequences_per_epoch_; }
  int64_t local_batch() const { return local_batch_; }
  int64_t global_batch() const { return options_.global_batch; }
  int64_t seq_len() const { return options_.seq_len; }
  int64_t sequences_per_epoch() const { return sequences_per_epoch_; }
  int64_t total_tokens() const { return total_tokens_; }
  int64_t vocab_size() const { return vocab_size_; }
  int64_t eos_id() const { return eos_id_; }
  const std::string& tokenizer() const { return tokenizer_; }
  const std::vector<std::string>& files() const { return options_.files; }

 private:
  class Worker;  // the prefetch thread and its queue

  LoaderOptions options_;
  int64_t local_batch_ = 0;
  int64_t position_ = 0;
  // Found by the thread while opening the files; constant afterwards.
  int64_t sequences_per_epoch_ = 0;
  int64_t total_tokens_ = 0;
  int64_t vocab_size_ = 0;
  int64_t eos_id_ = -1;
  std::string tokenizer_;
  std::unique_ptr<Worker> worker_;
};

// The order of epoch `epoch`: a permutation of 0..num_sequences-1 by Fisher-Yates with a
// splitmix64 stream seeded from (seed, epoch); the same on every platform and standard library.
std::vector<uint32_t> epoch_permutation(int64_t num_sequences, uint64_t seed, int64_t epoch);

// The files a shell-style pattern (*, ?, [...], {a,b}, ~) matches, sorted. DataError when none
// does (a pattern without wildcards names the missing file).
std::vector<std::string> expand_glob(const std::string& pattern);
// The sorted union of several patterns; each must match something.
std::vector<std::string> expand_globs(const std::vector<std::string>& patterns);
// expand_globs of a comma-separated list of patterns (how --data.train / --data.val take them).
std::vector<std::string> expand_glob_list(const std::string& comma_separated);

}  // namespace shc::data
