#include "data/prepare.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "data/shard.h"
#include "data/tokenizer.h"

namespace shc::data {

namespace fs = std::filesystem;

namespace {

// Input is read and tokenized in blocks of about this size, cut after a newline.
constexpr size_t kReadBlockBytes = 1 << 20;
// Tokens moved from the temporary token file into a shard per write.
constexpr size_t kCopyBlockTokens = 1 << 20;

std::string mib(int64_t bytes) {
  std::ostringstream s;
  s.precision(1);
  s << std::fixed << static_cast<double>(bytes) / (1024.0 * 1024.0) << " MiB";
  return s.str();
}

std::string shard_name(const char* split, size_t index) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%s-%05zu.h5", split, index);
  return buffer;
}

bool is_shard_name(const std::string& name) {
  const bool prefix = name.rfind("train-", 0) == 0 || name.rfind("val-", 0) == 0;
  return prefix && name.size() > 3 && name.compare(name.size() - 3, 3, ".h5") == 0;
}

// Removes the temporary directory, and the output directory if this run created it and it is
// still empty, unless dismissed.
class TempDirGuard {
 public:
  TempDirGuard(fs::path temp, fs::path created_output)
      : temp_(std::move(temp)), created_output_(std::move(created_output)) {}
  ~TempDirGuard() {
    std::error_code ec;
    fs::remove_all(temp_, ec);
    if (!created_output_.empty() && fs::is_empty(created_output_, ec)) {
      fs::remove(created_output_, ec);
    }
  }
  TempDirGuard(const TempDirGuard&) = delete;
  TempDirGuard& operator=(const TempDirGuard&) = delete;

 private:
  fs::path temp_;
  fs::path created_output_;
};

void check_options(const PrepareOptions& o) {
  if (o.inputs.empty()) throw std::invalid_argument("prepare: no input files");
  if (o.output_dir.empty()) throw std::invalid_argument("prepare: no output directory");
  if (o.min_shard_tokens < 2) {
    throw std::invalid_argument("prepare: min_shard_tokens (" + std::to_string(o.min_shard_tokens) +
                                ") must be at least 2");
  }
  if (o.shard_tokens < 2 * o.min_shard_tokens) {
    throw std::invalid_argument("prepare: shard_tokens (" + std::to_string(o.shard_tokens) +
                                ") must be at least 2 x min_shard_tokens (" +
                                std::to_string(o.min_shard_tokens) +
                                ") so that every shard holds a whole sequence");
  }
  if (!(o.val_fraction >= 0.0 && o.val_fraction < 1.0)) {
    throw std::invalid_argument("prepare: val_fraction (" + std::to_string(o.val_fraction) +
                                ") must be in [0, 1)");
  }
  parse_tokenizer_spec(o.tokenizer);  // throws std::invalid_argument
}

int64_t check_inputs(const std::vector<std::string>& inputs) {
  int64_t total = 0;
  for (const auto& input : inputs) {
    const std::string at = "input file '" + input + "'";
    std::error_code ec;
    const auto status = fs::status(input, ec);
    if (!fs::exists(status)) throw DataError(at + ": no such file");
    if (fs::is_directory(status)) throw DataError(at + " is a directory");
    std::ifstream probe(input, std::ios::binary);
    if (!probe) throw DataError(at + ": cannot read it");
    const auto size = fs::file_size(input, ec);
    if (ec) throw DataError(at + ": cannot read it");
    if (size == 0) throw DataError(at + " is empty");
    total += static_cast<int64_t>(size);
  }
  return total;
}

// The token stream of all documents, kept in a temporary file of native uint32 so that inputs
// of any size take bounded memory before the split is known.
class TokenStream {
 public:
  explicit TokenStream(const fs::path& path) : path_(path) {
    out_.open(path, std::ios::binary | std::ios::trunc);
    if (!out_) throw DataError("cannot create temporary file '" + path.string() + "'");
  }
  void append(const std::vector<uint32_t>& tokens) {
    out_.write(reinterpret_cast<const char*>(tokens.data()),
               static_cast<std::streamsize>(tokens.size() * sizeof(uint32_t)));
    if (!out_) throw DataError("cannot write temporary file '" + path_.string() + "' (disk full?)");
    size_ += static_cast<int64_t>(tokens.size());
  }
  void finish() {
    out_.close();
    if (!out_) throw DataError("cannot write temporary file '" + path_.string() + "' (disk full?)");
    in_.open(path_, std::ios::binary);
    if (!in_) throw DataError("cannot read temporary file '" + path_.string() + "'");
  }
  void read(int64_t offset, int64_t count, std::vector<uint32_t>& out) {
    out.resize(static_cast<size_t>(count));
    in_.seekg(static_cast<std::streamoff>(offset) * static_cast<std::streamoff>(sizeof(uint32_t)));
    in_.read(reinterpret_cast<char*>(out.data()),
             static_cast<std::streamsize>(count * static_cast<int64_t>(sizeof(uint32_t))));
    if (!in_) throw DataError("cannot read temporary file '" + path_.string() + "'");
  }
  int64_t size() const { return size_; }

 private:
  fs::path path_;
  std::ofstream out_;
  std::ifstream in_;
  int64_t size_ = 0;
};

}  // namespace

std::vector<std::string> shard_files_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec) && is_shard_name(entry.path().filename().string())) {
      out.push_back(entry.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

PrepareResult prepare_dataset(const PrepareOptions& o) {
  check_options(o);
  const auto log = [&](const std::string& line) {
    if (o.log) o.log(line);
  };
  PrepareResult result;
  result.input_bytes = check_inputs(o.inputs);

  // The output directory: refuse one that holds shards, unless overwriting.
  const fs::path out_dir(o.output_dir);
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !fs::is_directory(out_dir, ec)) {
    throw DataError("output directory '" + o.output_dir + "' exists and is not a directory");
  }
  const auto existing = shard_files_in(o.output_dir);
  if (!existing.empty() && !o.overwrite) {
    throw DataError("output directory '" + o.output_dir + "' already holds shards (" +
                    std::to_string(existing.size()) + " files, e.g. " +
                    fs::path(existing.front()).filename().string() +
                    "); pass --overwrite to replace them");
  }
  const bool created = !fs::exists(out_dir, ec);
  fs::create_directories(out_dir, ec);
  if (ec) {
    throw DataError("cannot create output directory '" + o.output_dir + "': " + ec.message());
  }
  const fs::path temp = out_dir / (".tmp-" + std::to_string(::getpid()));
  fs::remove_all(temp, ec);
  TempDirGuard guard(temp, created ? out_dir : fs::path());
  if (!fs::create_directory(temp, ec)) {
    throw DataError("cannot create temporary directory '" + temp.string() + "'");
  }

  // The tokenizer; a SentencePiece model goes into the output directory with the shards.
  const TokenizerSpec spec = parse_tokenizer_spec(o.tokenizer);
  const fs::path temp_model = temp / "tokenizer.model";
  std::unique_ptr<Tokenizer> tokenizer;
  if (spec.kind == TokenizerSpec::Kind::kTrainSentencePiece) {
    log("training a SentencePiece model (vocabulary " + std::to_string(spec.vocab_size) + ") on " +
        std::to_string(o.inputs.size()) + " input file(s), " + mib(result.input_bytes));
    tokenizer = make_tokenizer(o.tokenizer, o.inputs, temp_model.string());
  } else {
    tokenizer = make_tokenizer(o.tokenizer);
    if (spec.kind == TokenizerSpec::Kind::kSentencePiece) {
      fs::copy_file(spec.model_path, temp_model, fs::copy_options::overwrite_existing, ec);
      if (ec)
        throw DataError("cannot copy '" + spec.model_path + "' to '" + temp_model.string() + "'");
    }
  }
  const bool has_model = spec.kind != TokenizerSpec::Kind::kByte;
  result.tokenizer_id = tokenizer->id();
  result.vocab_size = tokenizer->vocab_size();
  result.eos_id = tokenizer->eos_id();
  log("tokenizing " + std::to_string(o.inputs.size()) + " input file(s), " +
      mib(result.input_bytes) + ", with " + result.tokenizer_id + " (vocabulary " +
      std::to_string(result.vocab_size) + ", EOS " + std::to_string(result.eos_id) + ")");

  // Pass 1: every document's tokens and its EOS, into one temporary stream.
  TokenStream stream(temp / "tokens.bin");
  std::vector<int64_t> doc_starts;
  int64_t bytes_done = 0, next_report = o.log_every_bytes;
  const auto encode = [&](const std::string& text) {
    stream.append(tokenizer->encode(text));
    bytes_done += static_cast<int64_t>(text.size());
    if (o.log_every_bytes > 0 && bytes_done >= next_report) {
      log("tokenized " + mib(bytes_done) + " of " + mib(result.input_bytes) + " (" +
          std::to_string(stream.size()) + " tokens)");
      while (next_report <= bytes_done) next_report += o.log_every_bytes;
    }
  };
  for (const auto& input : o.inputs) {
    doc_starts.push_back(stream.size());
    std::ifstream in(input, std::ios::binary);
    if (!in) throw DataError("input file '" + input + "': cannot read it");
    std::string carry, block;
    std::vector<char> buffer(kReadBlockBytes);
    while (true) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const auto got = static_cast<size_t>(in.gcount());
      if (got == 0) break;
      block.assign(carry);
      block.append(buffer.data(), got);
      // Encode up to the last newline; the rest waits for the next block (or the end).
      const size_t cut = block.rfind('\n');
      if (cut == std::string::npos || in.eof()) {
        carry.swap(block);
        if (carry.size() < 4 * kReadBlockBytes || in.eof()) continue;
        block.swap(carry);  // a very long line: encode it anyway
        carry.clear();
      } else {
        carry.assign(block, cut + 1, std::string::npos);
        block.resize(cut + 1);
      }
      encode(block);
    }
    if (in.bad()) throw DataError("input file '" + input + "': read error");
    if (!carry.empty()) encode(carry);
    if (stream.size() == doc_starts.back()) {
      throw DataError("input file '" + input + "' holds no text (it encodes to no tokens)");
    }
    stream.append({static_cast<uint32_t>(result.eos_id)});
  }
  stream.finish();
  result.documents = static_cast<int64_t>(o.inputs.size());
  const int64_t total = stream.size();

  // The split: the validation split is the end of the stream.
  int64_t val = 0;
  if (o.val_fraction > 0) {
    val = std::max<int64_t>(
        static_cast<int64_t>(std::ceil(o.val_fraction * static_cast<double>(total))),
        o.min_shard_tokens);
  }
  const int64_t train = total - val;
  if (train < o.min_shard_tokens) {
    throw DataError(
        "the input text is too short: " + std::to_string(total) + " tokens, but the train" +
        std::string(val > 0 ? " and the validation split each need" : " split needs") +
        " at least min_shard_tokens = " + std::to_string(o.min_shard_tokens) + " tokens");
  }
  result.train_tokens = train;
  result.val_tokens = val;
  log("tokenized " + mib(bytes_done) + ": " + std::to_string(total) + " tokens in " +
      std::to_string(result.documents) + " document(s); train " + std::to_string(train) +
      ", validation " + std::to_string(val));

  // Pass 2: the shards, each split cut into equal parts of at most shard_tokens.
  std::vector<std::string> temp_names;  // file names inside temp, in writing order
  std::vector<uint32_t> tokens;
  const auto write_split = [&](const char* split, int64_t begin, int64_t length) {
    if (length == 0) return;
    const int64_t shards = (length + o.shard_tokens - 1) / o.shard_tokens;
    const int64_t base = length / shards, extra = length % shards;
    int64_t start = begin;
    for (int64_t i = 0; i < shards; ++i) {
      const int64_t size = base + (i < extra ? 1 : 0);
      const std::string name = shard_name(split, static_cast<size_t>(i));
      ShardWriter writer((temp / name).string(), result.vocab_size, result.tokenizer_id,
                         result.eos_id, size);
      auto doc = std::lower_bound(doc_starts.begin(), doc_starts.end(), start);
      for (int64_t at = start; at < start + size;) {
        const int64_t count =
            std::min<int64_t>(static_cast<int64_t>(kCopyBlockTokens), start + size - at);
        stream.read(at, count, tokens);
        // Mark each document start inside [at, at + count) at its place in the stream.
        int64_t written = 0;
        for (; doc != doc_starts.end() && *doc < at + count; ++doc) {
          const int64_t upto = *doc - at;
          writer.append(tokens.data() + written, static_cast<size_t>(upto - written));
          writer.mark_document_start();
          written = upto;
        }
        writer.append(tokens.data() + written, static_cast<size_t>(count - written));
        at += count;
      }
      writer.close();
      temp_names.push_back(name);
      log("wrote " + name + " (" + std::to_string(size) + " tokens)");
      (split[0] == 't' ? result.train_files : result.val_files)
          .push_back((out_dir / name).string());
      start += size;
    }
  };
  write_split("train", 0, train);
  write_split("val", train, val);
  fs::remove(temp / "tokens.bin", ec);

  // Into place: old shards (and model) out first, then the new files in.
  if (o.overwrite) {
    for (const auto& old : shard_files_in(o.output_dir)) {
      if (!fs::remove(old, ec) && ec) {
        throw DataError("cannot remove old shard '" + old + "': " + ec.message());
      }
    }
    fs::remove(out_dir / "tokenizer.model", ec);
  }
  if (has_model) {
    temp_names.push_back("tokenizer.model");
    result.tokenizer_model = (out_dir / "tokenizer.model").string();
  }
  for (const auto& name : temp_names) {
    fs::rename(temp / name, out_dir / name, ec);
    if (ec) {
      throw DataError("cannot move '" + (temp / name).string() + "' into '" + o.output_dir +
                      "': " + ec.message());
    }
  }
  log("prepared '" + o.output_dir + "': " + std::to_string(result.train_files.size()) +
      " train shard(s), " + std::to_string(result.val_files.size()) + " validation shard(s)");
  return result;
}

}  // namespace shc::data
