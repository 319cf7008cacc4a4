#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>
#include <unordered_map>

namespace shc::data {

namespace {

// SentencePiece encodes text in pieces of about this many bytes, each ending at a newline
// (or, for a longer line, before a space): bounded memory for any document.
constexpr size_t kEncodePieceBytes = 1 << 14;
constexpr size_t kEncodeMaxPieceBytes = 1 << 16;

std::string hex64(uint64_t value) {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(value));
  return buffer;
}

// Where the next piece of text[begin..] ends (exclusive).
size_t piece_end(const std::string& text, size_t begin) {
  if (text.size() - begin <= kEncodePieceBytes) return text.size();
  const size_t newline = text.find('\n', begin + kEncodePieceBytes);
  if (newline != std::string::npos && newline + 1 - begin <= kEncodeMaxPieceBytes) {
    return newline + 1;
  }
  size_t end = begin + kEncodeMaxPieceBytes;
  if (end >= text.size()) return text.size();
  // A long line: split before a space (where SentencePiece starts a new piece anyway), else
  // at a UTF-8 character boundary.
  const size_t space = text.rfind(' ', end);
  if (space != std::string::npos && space > begin) return space;
  while (end > begin + 1 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return end;
}

// The non-empty lines of some text files, one after another, for the SentencePiece trainer.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& files) : files_(files) { advance(); }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return status_; }

 private:
  void advance() {
    while (true) {
      if (in_.is_open() && std::getline(in_, line_)) {
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        if (!line_.empty()) return;
        continue;
      }
      if (in_.is_open()) in_.close();
      if (next_ >= files_.size()) {
        done_ = true;
        line_.clear();
        return;
      }
      const std::string& file = files_[next_++];
      in_.open(file, std::ios::binary);
      if (!in_) {
        status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kNotFound,
                                              "cannot read input file '" + file + "'");
        done_ = true;
        return;
      }
    }
  }

  const std::vector<std::string>& files_;
  size_t next_ = 0;
  std::ifstream in_;
  std::string line_;
  bool done_ = false;
  sentencepiece::util::Status status_;
};

}  // namespace

Tokenizer::~Tokenizer() = default;

// ---------------------------------------------------------------------------------------------
// ByteTokenizer

std::vector<uint32_t> ByteTokenizer::encode(const std::string& text) const {
  std::vector<uint32_t> ids(text.size());
  std::transform(text.begin(), text.end(), ids.begin(),
                 [](char c) { return static_cast<uint32_t>(static_cast<unsigned char>(c)); });
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<uint32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (uint32_t id : ids) {
    if (id < 256) {
      text.push_back(static_cast<char>(id));
    } else if (id != kEos) {
      throw std::invalid_argument("byte tokenizer: id " + std::to_string(id) +
                                  " >= vocab_size 257");
    }
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// SentencePieceTokenizer

struct SentencePieceTokenizer::Impl {
  std::string path;
  std::string hash;
  sentencepiece::SentencePieceProcessor processor;
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = model_path;
  const std::string at = "SentencePiece model '" + model_path + "': ";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_path, ec)) throw DataError(at + "no such file");
  const auto status = impl_->processor.Load(model_path);
  if (!status.ok()) {
    throw DataError(at + "cannot load it (" + status.ToString() + ")");
  }
  if (impl_->processor.eos_id() < 0) throw DataError(at + "the model has no EOS piece");
  impl_->hash = fnv1a64_file_hex(model_path);
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<uint32_t> SentencePieceTokenizer::encode(const std::string& text) const {
  std::vector<uint32_t> out;
  std::vector<int> ids;
  for (size_t begin = 0; begin < text.size();) {
    const size_t end = piece_end(text, begin);
    const auto status =
        impl_->processor.Encode(std::string_view(text).substr(begin, end - begin), &ids);
    if (!status.ok()) {
      throw DataError("SentencePiece model '" + impl_->path +
                      "': encoding failed: " + status.ToString());
    }
    out.insert(out.end(), ids.begin(), ids.end());
    begin = end;
  }
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<uint32_t>& ids) const {
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  const int64_t vocab = vocab_size(), eos = eos_id();
  for (uint32_t id : ids) {
    if (id >= vocab) {
      throw std::invalid_argument("SentencePiece model '" + impl_->path + "': id " +
                                  std::to_string(id) + " >= vocab_size " + std::to_string(vocab));
    }
    if (id != eos) pieces.push_back(static_cast<int>(id));
  }
  std::string text;
  const auto status = impl_->processor.Decode(pieces, &text);
  if (!status.ok()) {
    throw std::invalid_argument("SentencePiece model '" + impl_->path +
                                "': decoding failed: " + status.ToString());
  }
  return text;
}

int64_t SentencePieceTokenizer::vocab_size() const {
  return impl_->processor.GetPieceSize();
}
int64_t SentencePieceTokenizer::eos_id() const {
  return impl_->processor.eos_id();
}
std::string SentencePieceTokenizer::id() const {
  return "spm:" + impl_->hash;
}
const std::string& SentencePieceTokenizer::model_path() const {
  return impl_->path;
}

void SentencePieceTokenizer::train(const std::vector<std::string>& text_files, int64_t vocab_size,
                                   const std::string& model_path) {
  if (vocab_size < 1 || vocab_size > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("SentencePiece vocabulary size " + std::to_string(vocab_size) +
                                " is out of range");
  }
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "unigram"},
      {"vocab_size", std::to_string(vocab_size)},
      {"hard_vocab_limit", "false"},
      {"character_coverage", "1.0"},
      {"byte_fallback", "true"},
      // Lossless: no normalisation, whitespace kept as is, no space added in front.
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"max_sentence_length", "65536"},
      {"input_sentence_size", "2000000"},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", "1"},  // warnings and errors only
  };
  LineIterator lines(text_files);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &lines, &model);
  if (!status.ok()) {
    // Messages look like "Internal: ./src/x.cc(580) [condition] Vocabulary size is ...": keep
    // the sentence after the source location when there is one.
    std::string why = status.ToString();
    if (const size_t cut = why.rfind("] "); cut != std::string::npos) why = why.substr(cut + 2);
    throw DataError("training a SentencePiece model (vocabulary " + std::to_string(vocab_size) +
                    ") failed: " + why);
  }
  std::ofstream out(model_path, std::ios::binary | std::ios::trunc);
  out.write(model.data(), static_cast<std::streamsize>(model.size()));
  if (!out.flush()) throw DataError("cannot write SentencePiece model '" + model_path + "'");
}

// ---------------------------------------------------------------------------------------------
// Specs and factories

TokenizerSpec parse_tokenizer_spec(const std::string& spec) {
  const auto bad = [&](const std::string& why) {
    return std::invalid_argument("tokenizer '" + spec + "': " + why +
                                 "; use byte, spm:MODEL_FILE or train-spm:VOCAB_SIZE");
  };
  TokenizerSpec out;
  if (spec == "byte") return out;
  if (spec.rfind("spm:", 0) == 0) {
    out.kind = TokenizerSpec::Kind::kSentencePiece;
    out.model_path = spec.substr(4);
    if (out.model_path.empty()) throw bad("no model file");
    return out;
  }
  if (spec.rfind("train-spm:", 0) == 0) {
    out.kind = TokenizerSpec::Kind::kTrainSentencePiece;
    const std::string number = spec.substr(10);
    try {
      size_t used = 0;
      out.vocab_size = std::stoll(number, &used);
      if (used != number.size()) throw std::invalid_argument(number);
    } catch (const std::exception&) {
      throw bad("'" + number + "' is not a vocabulary size");
    }
    if (out.vocab_size < 2 || out.vocab_size > std::numeric_limits<int32_t>::max()) {
      throw bad("vocabulary size out of range");
    }
    return out;
  }
  throw bad("unknown tokenizer");
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec,
                                          const std::vector<std::string>& training_files,
                                          const std::string& trained_model_path) {
  const TokenizerSpec parsed = parse_tokenizer_spec(spec);
  switch (parsed.kind) {
    case TokenizerSpec::Kind::kByte:
      return std::make_unique<ByteTokenizer>();
    case TokenizerSpec::Kind::kSentencePiece:
      return std::make_unique<SentencePieceTokenizer>(parsed.model_path);
    case TokenizerSpec::Kind::kTrainSentencePiece:
      if (training_files.empty() || trained_model_path.empty()) {
        throw std::invalid_argument("tokenizer '" + spec +
                                    "' needs training text and a path for the model");
      }
      SentencePieceTokenizer::train(training_files, parsed.vocab_size, trained_model_path);
      return std::make_unique<SentencePieceTokenizer>(trained_model_path);
  }
  throw std::logic_error("unreachable");
}

std::unique_ptr<Tokenizer> tokenizer_for_id(const std::string& tokenizer_id,
                                            const std::string& model_path) {
  if (tokenizer_id == ByteTokenizer::kId) return std::make_unique<ByteTokenizer>();
  if (tokenizer_id.rfind("spm:", 0) == 0) {
    if (model_path.empty()) {
      throw std::invalid_argument("tokenizer '" + tokenizer_id +
                                  "' needs its SentencePiece model file");
    }
    auto tokenizer = std::make_unique<SentencePieceTokenizer>(model_path);
    if (tokenizer->id() != tokenizer_id) {
      throw DataError("SentencePiece model '" + model_path + "' is " + tokenizer->id() +
                      ", not the tokenizer " + tokenizer_id + " the data was made with");
    }
    return tokenizer;
  }
  throw std::invalid_argument("unknown tokenizer id '" + tokenizer_id + "'");
}

std::string fnv1a64_file_hex(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot read '" + path + "'");
  uint64_t hash = 0xcbf29ce484222325ull;
  std::vector<char> buffer(1 << 16);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize got = in.gcount();
    for (std::streamsize i = 0; i < got; ++i) {
      hash ^= static_cast<unsigned char>(buffer[static_cast<size_t>(i)]);
      hash *= 0x100000001b3ull;
    }
  }
  if (in.bad()) throw DataError("cannot read '" + path + "'");
  return hex64(hash);
}

}  // namespace shc::data
