// `shc prepare` as a library (SPEC §6): text -> shards -> tokens round trips for both tokenizers,
// the split and the shard sizes, and its errors (nothing is left half-written).
#include <chrono>
#include <filesystem>

#include <gtest/gtest.h>

#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "tests/data_test_util.h"

namespace shc::data {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Every token of the shards, in order (train shards, then validation shards).
std::vector<uint32_t> read_all(const std::vector<std::string>& files) {
  std::vector<uint32_t> all;
  for (const auto& file : files) {
    ShardReader reader(file);
    auto tokens = reader.read_range(0, reader.info().num_tokens);
    all.insert(all.end(), tokens.begin(), tokens.end());
  }
  return all;
}

// The directory entries' names, sorted.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The DataError message of prepare_dataset(o), or "" when it succeeds.
std::string prepare_error(const PrepareOptions& o) {
  try {
    prepare_dataset(o);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

struct Corpus {
  std::vector<std::string> files;
  std::vector<std::string> texts;
};

Corpus write_corpus(const TempDir& dir, const std::vector<size_t>& sizes) {
  Corpus corpus;
  for (size_t i = 0; i < sizes.size(); ++i) {
    corpus.files.push_back(dir.file("doc" + std::to_string(i) + ".txt"));
    corpus.texts.push_back(test::english_like_text(sizes[i], 10 + i));
    test::write_file(corpus.files.back(), corpus.texts.back());
  }
  return corpus;
}

TEST(Prepare, ByteRoundTripSplitAndShards) {
  TempDir dir;
  const Corpus corpus = write_corpus(dir, {30000, 12345, 50000});
  PrepareOptions o;
  o.inputs = corpus.files;
  o.output_dir = dir.file("out");
  o.tokenizer = "byte";
  o.shard_tokens = 20000;
  o.val_fraction = 0.1;
  o.min_shard_tokens = 129;
  o.log_every_bytes = 1000;
  std::vector<std::string> log;
  o.log = [&](const std::string& line) { log.push_back(line); };
  const PrepareResult r = prepare_dataset(o);

  // The expected stream: each document's bytes and EOS (256).
  std::vector<uint32_t> expected;
  std::vector<int64_t> doc_starts;
  for (const auto& text : corpus.texts) {
    doc_starts.push_back(static_cast<int64_t>(expected.size()));
    for (unsigned char c : text) expected.push_back(c);
    expected.push_back(256);
  }
  const int64_t total = static_cast<int64_t>(expected.size());
  EXPECT_EQ(r.tokenizer_id, "byte:v1");
  EXPECT_EQ(r.vocab_size, 257);
  EXPECT_EQ(r.eos_id, 256);
  EXPECT_EQ(r.documents, 3);
  EXPECT_EQ(r.tokenizer_model, "");
  EXPECT_EQ(r.val_tokens, (total + 9) / 10);  // ceil(0.1 * total)
  EXPECT_EQ(r.train_tokens + r.val_tokens, total);

  // File names, counts, and nothing else in the directory (no temporary leftovers).
  const int64_t train_shards = (r.train_tokens + o.shard_tokens - 1) / o.shard_tokens;
  ASSERT_EQ(static_cast<int64_t>(r.train_files.size()), train_shards);
  ASSERT_EQ(r.val_files.size(), 1u);
  std::vector<std::string> names;
  for (int64_t i = 0; i < train_shards; ++i)
    names.push_back("train-0000" + std::to_string(i) + ".h5");
  names.push_back("val-00000.h5");
  EXPECT_EQ(listing(o.output_dir), names);
  EXPECT_EQ(r.train_files.front(), (fs::path(o.output_dir) / "train-00000.h5").string());

  // Equal shard sizes (within one token), attributes on every shard.
  int64_t smallest = total, largest = 0;
  for (const auto& file : r.train_files) {
    ShardReader reader(file);
    smallest = std::min(smallest, reader.info().num_tokens);
    largest = std::max(largest, reader.info().num_tokens);
    EXPECT_EQ(reader.info().tokenizer, "byte:v1");
    EXPECT_EQ(reader.info().vocab_size, 257);
    EXPECT_EQ(reader.info().eos_id, 256);
    EXPECT_EQ(reader.info().token_bytes, 2);
    EXPECT_LE(reader.info().num_tokens, o.shard_tokens);
  }
  EXPECT_LE(largest - smallest, 1);

  // The round trip: shards concatenated are the stream; the split is its end.
  std::vector<uint32_t> train = read_all(r.train_files), val = read_all(r.val_files);
  EXPECT_EQ(static_cast<int64_t>(train.size()), r.train_tokens);
  std::vector<uint32_t> all = train;
  all.insert(all.end(), val.begin(), val.end());
  EXPECT_EQ(all, expected);
  EXPECT_EQ(ByteTokenizer().decode(all), corpus.texts[0] + corpus.texts[1] + corpus.texts[2]);

  // doc_offsets: each document start, in the shard where it lies.
  std::vector<int64_t> found;
  int64_t base = 0;
  for (const auto& file : r.train_files) {
    ShardReader reader(file);
    for (int64_t offset : reader.read_doc_offsets()) found.push_back(base + offset);
    base += reader.info().num_tokens;
  }
  EXPECT_EQ(found, doc_starts);

  // Progress: lines while tokenizing and one per shard.
  const auto count = [&](const std::string& prefix) {
    return std::count_if(log.begin(), log.end(),
                         [&](const std::string& line) { return line.rfind(prefix, 0) == 0; });
  };
  EXPECT_GE(count("tokenized "), 2);
  EXPECT_EQ(count("wrote "), train_shards + 1);
}

TEST(Prepare, ValidationSplitHoldsAtLeastOneSequence) {
  TempDir dir;
  const Corpus corpus = write_corpus(dir, {5000});
  PrepareOptions o;
  o.inputs = corpus.files;
  o.output_dir = dir.file("out");
  o.val_fraction = 0.001;  // 5 tokens: raised to min_shard_tokens
  o.min_shard_tokens = 257;
  o.shard_tokens = 1 << 20;
  const PrepareResult r = prepare_dataset(o);
  EXPECT_EQ(r.val_tokens, 257);
  ASSERT_EQ(r.val_files.size(), 1u);
  EXPECT_EQ(ShardReader(r.val_files[0]).info().num_tokens, 257);

  o.val_fraction = 0;
  o.overwrite = true;
  const PrepareResult none = prepare_dataset(o);
  EXPECT_TRUE(none.val_files.empty());
  EXPECT_EQ(none.train_tokens, static_cast<int64_t>(corpus.texts[0].size()) + 1);
  EXPECT_EQ(listing(o.output_dir), (std::vector<std::string>{"train-00000.h5"}));
}

TEST(Prepare, SentencePieceTrainedRoundTrip) {
  TempDir dir;
  const Corpus corpus = write_corpus(dir, {200000, 100000});
  PrepareOptions o;
  o.inputs = corpus.files;
  o.output_dir = dir.file("out");
  o.tokenizer = "train-spm:800";
  o.shard_tokens = 30000;
  o.val_fraction = 0.05;
  o.min_shard_tokens = 65;
  const auto start = std::chrono::steady_clock::now();
  const PrepareResult r = prepare_dataset(o);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20);

  const std::string model = (fs::path(o.output_dir) / "tokenizer.model").string();
  EXPECT_EQ(r.tokenizer_model, model);
  ASSERT_TRUE(fs::is_regular_file(model));
  SentencePieceTokenizer tokenizer(model);
  EXPECT_EQ(r.tokenizer_id, tokenizer.id());
  EXPECT_EQ(r.vocab_size, tokenizer.vocab_size());
  EXPECT_EQ(r.eos_id, tokenizer.eos_id());
  EXPECT_GE(r.train_files.size(), 2u);
  EXPECT_EQ(r.val_files.size(), 1u);
  for (const auto& file : r.train_files) {
    EXPECT_EQ(ShardReader(file).info().tokenizer, tokenizer.id());
  }

  // Split the stream at EOS back into documents and decode each.
  std::vector<uint32_t> all = read_all(r.train_files);
  const auto val = read_all(r.val_files);
  all.insert(all.end(), val.begin(), val.end());
  std::vector<std::string> decoded;
  std::vector<uint32_t> doc;
  for (uint32_t id : all) {
    if (id == static_cast<uint32_t>(r.eos_id)) {
      decoded.push_back(tokenizer.decode(doc));
      doc.clear();
    } else {
      doc.push_back(id);
    }
  }
  EXPECT_TRUE(doc.empty()) << "the stream ends with EOS";
  EXPECT_EQ(decoded, corpus.texts);

  // The same model given as spm:PATH reproduces the same shards' tokens.
  PrepareOptions again = o;
  again.output_dir = dir.file("again");
  again.tokenizer = "spm:" + model;
  const PrepareResult r2 = prepare_dataset(again);
  EXPECT_EQ(r2.tokenizer_id, r.tokenizer_id);
  EXPECT_EQ(read_all(r2.train_files), read_all(r.train_files));
  EXPECT_TRUE(fs::is_regular_file(fs::path(again.output_dir) / "tokenizer.model"));
}

TEST(PrepareErrors, MissingInputNamesItAndWritesNothing) {
  TempDir dir;
  const Corpus corpus = write_corpus(dir, {3000});
  PrepareOptions o;
  o.inputs = {corpus.files[0], dir.file("missing.txt")};
  o.output_dir = dir.file("out");
  o.min_shard_tokens = 65;
  o.shard_tokens = 1000;
  EXPECT_EQ(prepare_error(o), "input file '" + dir.file("missing.txt") + "': no such file");
  EXPECT_FALSE(fs::exists(o.output_dir));
}

TEST(PrepareErrors, EmptyInput) {
  TempDir dir;
  test::write_file(dir.file("empty.txt"), "");
  PrepareOptions o;
  o.inputs = {dir.file("empty.txt")};
  o.output_dir = dir.file("out");
  EXPECT_EQ(prepare_error(o), "input file '" + dir.file("empty.txt") + "' is empty");
  EXPECT_FALSE(fs::exists(o.output_dir));
  o.inputs = {dir.path().string()};
  EXPECT_EQ(prepare_error(o), "input file '" + dir.path().string() + "' is a directory");
}

TEST(PrepareErrors, RefusesAnOutputDirectoryHoldingShards) {
  TempDir dir;
  const Corpus corpus = write_corpus(dir, {4000});
  PrepareOptions o;
  o.inputs = corpus.files;
  o.output_dir = dir.file("out");
  o.min_shard_tokens = 65;
  o.shard_tokens = 1000;
  o.val_fraction = 0.1;
  const PrepareResult first = prepare_dataset(o);
  ASSERT_EQ(first.train_files.size(), 4u);
  const std::string before = test::read_file(first.train_files[0]);

  // A different corpus, without overwrite: refused, the old shards untouched.
  test::write_file(corpus.files[0], test::english_like_text(1500, 99));
  EXPECT_EQ(prepare_error(o), "output directory '" + o.output_dir +
                                  "' already holds shards (5 files, e.g. train-00000.h5); pass "
                                  "--overwrite to replace them");
  EXPECT_EQ(test::read_file(first.train_files[0]), before);
  EXPECT_EQ(listing(o.output_dir).size(), 5u);

  // With overwrite: replaced, and the shards the new data does not have are gone.
  o.overwrite = true;
  const PrepareResult second = prepare_dataset(o);
  EXPECT_EQ(second.train_files.size(), 2u);
  EXPECT_EQ(listing(o.output_dir),
            (std::vector<std::string>{"train-00000.h5", "train-00001.h5", "val-00000.h5"}));

  // A directory with other files but no shards is fine.
  const std::string other = dir.file("other");
  fs::create_directories(other);
  test::write_file(other + "/notes.txt", "keep me");
  o.output_dir = other;
  o.overwrite = false;
  prepare_dataset(o);
  EXPECT_EQ(test::read_file(other + "/notes.txt"), "keep me");
}

TEST(PrepareErrors, FailureLeavesNoPartialOutput) {
  TempDir dir;
  const Corpus corpus = write_corpus(dir, {20000});
  PrepareOptions o;
  o.inputs = corpus.files;
  o.output_dir = dir.file("out");
  o.tokenizer = "train-spm:100";  // too small for byte fallback: training fails
  const std::string error = prepare_error(o);
  EXPECT_NE(error.find("training a SentencePiece model (vocabulary 100) failed"), std::string::npos)
      << error;
  EXPECT_FALSE(fs::exists(o.output_dir)) << "created by the call, so removed again";

  fs::create_directories(o.output_dir);
  EXPECT_NE(prepare_error(o), "");
  EXPECT_TRUE(listing(o.output_dir).empty()) << "no temporary directory left behind";
}

TEST(PrepareErrors, TooLittleText) {
  TempDir dir;
  test::write_file(dir.file("short.txt"), "Only a few words.\n");
  PrepareOptions o;
  o.inputs = {dir.file("short.txt")};
  o.output_dir = dir.file("out");
  o.min_shard_tokens = 65;
  o.shard_tokens = 1000;
  EXPECT_EQ(prepare_error(o),
            "the input text is too short: 19 tokens, but the train and the validation split each "
            "need at least min_shard_tokens = 65 tokens");
  EXPECT_FALSE(fs::exists(o.output_dir));
}

TEST(PrepareErrors, BadOptions) {
  TempDir dir;
  const Corpus corpus = write_corpus(dir, {3000});
  PrepareOptions o;
  o.inputs = corpus.files;
  o.output_dir = dir.file("out");
  o.tokenizer = "wordpiece";
  EXPECT_THROW(prepare_dataset(o), std::invalid_argument);
  o.tokenizer = "byte";
  o.val_fraction = 1.0;
  EXPECT_THROW(prepare_dataset(o), std::invalid_argument);
  o.val_fraction = 0.1;
  o.shard_tokens = 2000;  // < 2 x min_shard_tokens (1025)
  EXPECT_THROW(prepare_dataset(o), std::invalid_argument);
  o.inputs.clear();
  o.shard_tokens = 1 << 20;
  EXPECT_THROW(prepare_dataset(o), std::invalid_argument);
  EXPECT_FALSE(fs::exists(o.output_dir));
}

}  // namespace
}  // namespace shc::data
