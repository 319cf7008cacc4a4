// Token shards (SPEC §6): one HDF5 file per shard, readable by h5py with no project code.
//
//   /tokens        1-D dataset, uint16 when vocab_size <= 65535 else uint32; chunked, not
//                  compressed. Token ids are < vocab_size.
//   /doc_offsets   optional 1-D int64 dataset: the offset in /tokens where each document that
//                  starts in this shard starts (a document continued from the previous shard
//                  has no entry).
//   attributes of the root group:
//     format_version  int32, kShardFormatVersion
//     vocab_size      int64
//     tokenizer       string, the tokenizer's id and hash ("byte:v1", "spm:<fnv1a64 hex>")
//     eos_id          int64, the end-of-document token
//     num_tokens      int64, the length of /tokens
//
// Thread safety: every HDF5 call made by this library holds hdf5_mutex(). Code elsewhere in the
// process that calls HDF5 itself (checkpoints) must hold it too.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/errors.h"

namespace shc::data {

inline constexpr int kShardFormatVersion = 1;

// The one lock around the HDF5 library in this process (recursive).
std::recursive_mutex& hdf5_mutex();

// What a shard's attributes say.
struct ShardInfo {
  std::string path;
  int64_t vocab_size = 0;
  std::string tokenizer;
  int64_t eos_id = -1;
  int64_t num_tokens = 0;
  int token_bytes = 0;  // 2 (uint16) or 4 (uint32)
  bool has_doc_offsets = false;
};

// Writes one shard. Tokens are appended in pieces (the dataset grows chunk by chunk); close()
// writes doc_offsets and the attributes. A writer destroyed without close() leaves a file that
// ShardReader rejects (no num_tokens attribute). Errors are DataError naming the file.
class ShardWriter {
 public:
  // Creates (or truncates) path. vocab_size in [1, 2^31 - 1]; eos_id in [0, vocab_size).
  // size_hint (the expected token count, 0 = unknown) only shrinks the chunks of small shards.
  ShardWriter(const std::string& path, int64_t vocab_size, const std::string& tokenizer,
              int64_t eos_id, int64_t size_hint = 0);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Every id must be < vocab_size (DataError otherwise).
  void append(const uint32_t* tokens, size_t count);
  void append(const std::vector<uint32_t>& tokens) { append(tokens.data(), tokens.size()); }
  // Records that a document starts at the current end of the token stream.
  void mark_document_start();
  void close();

  int64_t num_tokens() const;
  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Opens a shard read-only and validates it: an HDF5 file, a 1-D uint16/uint32 `tokens` dataset
// whose width fits vocab_size, every attribute present with a sane value, num_tokens equal to
// the dataset's length. DataError naming the file otherwise. Token ids are checked on every
// read. Keep one reader on one thread (all calls also hold hdf5_mutex()).
class ShardReader {
 public:
  explicit ShardReader(const std::string& path);
  ~ShardReader();
  ShardReader(ShardReader&&) noexcept;
  ShardReader& operator=(ShardReader&&) noexcept;

  const ShardInfo& info() const;
  // Tokens [offset, offset + count) into out; DataError on a range outside the dataset, a read
  // failure or a token id >= vocab_size (naming the file and the token's offset).
  void read_range(int64_t offset, int64_t count, uint32_t* out) const;
  std::vector<uint32_t> read_range(int64_t offset, int64_t count) const;
  // Empty when the shard has no doc_offsets dataset.
  std::vector<int64_t> read_doc_offsets() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shc::data
