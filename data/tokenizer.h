// Tokenizers for `shc prepare` (SPEC §6): a byte-level one that needs no setup and SentencePiece.
// A tokenizer's id() names it and its exact vocabulary ("byte:v1", "spm:<fnv1a64 of the model
// file, 16 hex digits>"); shards record it so that data made with different tokenizers is never
// mixed and a model can be matched to its tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/errors.h"

namespace shc::data {

class Tokenizer {
 public:
  virtual ~Tokenizer();
  // Text to ids; no EOS is added.
  virtual std::vector<uint32_t> encode(const std::string& text) const = 0;
  // Ids to text; EOS ids are dropped. std::invalid_argument on an id >= vocab_size().
  virtual std::string decode(const std::vector<uint32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t eos_id() const = 0;
  virtual std::string id() const = 0;
};

// Ids 0..255 are the bytes of the UTF-8 text, 256 is EOS; vocab_size 257 (the CPU presets'
// vocabulary). Lossless for any byte string.
class ByteTokenizer : public Tokenizer {
 public:
  static constexpr int64_t kVocabSize = 257;
  static constexpr uint32_t kEos = 256;
  static constexpr const char* kId = "byte:v1";

  std::vector<uint32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<uint32_t>& ids) const override;
  int64_t vocab_size() const override { return kVocabSize; }
  int64_t eos_id() const override { return kEos; }
  std::string id() const override { return kId; }
};

// A SentencePiece model file (.model). EOS is the model's eos id; a model without one is a
// DataError. Text is encoded in pieces that end at newlines, so arbitrarily long documents
// take bounded memory; for models trained by train() (identity normalisation, byte fallback,
// no dummy prefix) that is exactly the encoding of the whole text and decode(encode(t)) == t.
class SentencePieceTokenizer : public Tokenizer {
 public:
  // DataError naming the file when it is missing or not a SentencePiece model.
  explicit SentencePieceTokenizer(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  std::vector<uint32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<uint32_t>& ids) const override;
  int64_t vocab_size() const override;
  int64_t eos_id() const override;
  std::string id() const override;
  const std::string& model_path() const;

  // Trains a model with the SentencePiece library on the lines of text_files and writes it to
  // model_path (a unigram model with byte fallback, so any text round-trips; unk 0, bos 1,
  // eos 2). vocab_size is a soft limit: a small corpus may give fewer pieces. DataError when
  // training fails (its message says why, e.g. a vocabulary too small for byte fallback).
  static void train(const std::vector<std::string>& text_files, int64_t vocab_size,
                    const std::string& model_path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A parsed --tokenizer value: "byte", "spm:PATH" or "train-spm:VOCAB".
struct TokenizerSpec {
  enum class Kind { kByte, kSentencePiece, kTrainSentencePiece };
  Kind kind = Kind::kByte;
  std::string model_path;  // kSentencePiece
  int64_t vocab_size = 0;  // kTrainSentencePiece
};

// std::invalid_argument on anything else (the message lists the accepted forms).
TokenizerSpec parse_tokenizer_spec(const std::string& spec);

// Builds the tokenizer a spec names. "train-spm:VOCAB" first trains a model on training_files
// and writes it to trained_model_path (both required for that form).
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec,
                                          const std::vector<std::string>& training_files = {},
                                          const std::string& trained_model_path = {});

// The tokenizer whose id() is tokenizer_id, e.g. the `tokenizer` attribute of a shard: "byte:v1"
// needs nothing; "spm:HASH" loads model_path and checks that its hash matches. DataError when
// the model is missing or is another model; std::invalid_argument for an unknown id.
std::unique_ptr<Tokenizer> tokenizer_for_id(const std::string& tokenizer_id,
                                            const std::string& model_path = {});

// 64-bit FNV-1a of a file's bytes, as 16 lower-case hex digits. DataError if unreadable.
std::string fnv1a64_file_hex(const std::string& path);

}  // namespace shc::data
