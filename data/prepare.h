// `shc prepare` as a library function (SPEC §6): text files -> tokenizer -> HDF5 token shards
// with a train/validation split. Torch-free; jobs/prepare_job.cpp maps options and errors.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/errors.h"

namespace shc::data {

struct PrepareOptions {
  // Text files; each one is a document and is followed by the tokenizer's EOS id.
  std::vector<std::string> inputs;
  // Receives train-00000.h5 ..., val-00000.h5 ... and, for a SentencePiece tokenizer,
  // tokenizer.model (the trained model, or a copy of the spm:PATH model).
  std::string output_dir;
  // "byte", "spm:MODEL_FILE" or "train-spm:VOCAB_SIZE" (see parse_tokenizer_spec).
  std::string tokenizer = "byte";
  // Target tokens per shard. A split of n tokens is cut into ceil(n / shard_tokens) shards of
  // equal size (within one token), so no shard is a short remainder.
  int64_t shard_tokens = int64_t{1} << 24;
  // The last val_fraction of the token stream (the end of the last inputs) is the validation
  // split, but at least min_shard_tokens tokens when val_fraction > 0; 0 = no validation split.
  double val_fraction = 0.01;
  // Every shard written holds at least this many tokens: one sequence (seq_len + 1 tokens) of
  // the longest seq_len the data will be read with. The default fits seq_len <= 1024.
  int64_t min_shard_tokens = 1025;
  // Replace the shards (and tokenizer.model) an existing output directory holds; without it
  // such a directory is refused.
  bool overwrite = false;
  // Progress lines (every log_every_bytes of input tokenized, each shard written); may be empty.
  std::function<void(const std::string&)> log;
  int64_t log_every_bytes = int64_t{16} << 20;
};

struct PrepareResult {
  std::vector<std::string> train_files;  // final paths, in order
  std::vector<std::string> val_files;
  std::string tokenizer_model;  // output_dir/tokenizer.model, or "" for the byte tokenizer
  std::string tokenizer_id;
  int64_t vocab_size = 0;
  int64_t eos_id = 0;
  int64_t documents = 0;
  int64_t input_bytes = 0;
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
};

// Runs the whole preparation. Everything is written into output_dir/.tmp-<pid>/ and moved into
// place only at the end, so a failure leaves output_dir as it was (the temporary directory is
// removed; so is output_dir itself when this call created it).
// std::invalid_argument: bad option values or tokenizer spec. DataError: a missing, unreadable
// or empty input file (named), an output directory that already holds shards (named; unless
// overwrite), too little text for the requested split, a SentencePiece failure, a write error.
PrepareResult prepare_dataset(const PrepareOptions& options);

// The shard files (train-*.h5, val-*.h5) directly in dir, sorted; empty if dir does not exist.
std::vector<std::string> shard_files_in(const std::string& dir);

}  // namespace shc::data
