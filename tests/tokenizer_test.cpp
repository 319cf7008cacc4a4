// Tokenizers (SPEC §6): the byte-level one, SentencePiece trained with the real library, the
// spec strings of --tokenizer and the ids with hashes that shards record.
#include <chrono>
#include <filesystem>

#include <gtest/gtest.h>

#include "data/tokenizer.h"
#include "tests/data_test_util.h"

namespace shc::data {
namespace {

using test::TempDir;

TEST(ByteTokenizer, RoundTripsAnyBytes) {
  ByteTokenizer tokenizer;
  EXPECT_EQ(tokenizer.vocab_size(), 257);
  EXPECT_EQ(tokenizer.eos_id(), 256);
  EXPECT_EQ(tokenizer.id(), "byte:v1");
  std::string text = "Hello, wörld!\n\t";
  text.push_back('\0');
  text += "\xff\x80 end";
  const auto ids = tokenizer.encode(text);
  ASSERT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[0], 'H');
  EXPECT_EQ(ids[text.size() - 7], 0u);
  EXPECT_EQ(ids[text.size() - 6], 255u);
  EXPECT_EQ(tokenizer.decode(ids), text);
  EXPECT_EQ(tokenizer.decode({'a', 256, 'b'}), "ab");  // EOS dropped
  EXPECT_THROW(tokenizer.decode({257}), std::invalid_argument);
  EXPECT_TRUE(tokenizer.encode("").empty());
}

TEST(TokenizerSpec, Parses) {
  EXPECT_EQ(parse_tokenizer_spec("byte").kind, TokenizerSpec::Kind::kByte);
  const auto spm = parse_tokenizer_spec("spm:/a/b.model");
  EXPECT_EQ(spm.kind, TokenizerSpec::Kind::kSentencePiece);
  EXPECT_EQ(spm.model_path, "/a/b.model");
  const auto train = parse_tokenizer_spec("train-spm:8000");
  EXPECT_EQ(train.kind, TokenizerSpec::Kind::kTrainSentencePiece);
  EXPECT_EQ(train.vocab_size, 8000);
  for (const char* bad : {"", "bytes", "spm:", "train-spm:", "train-spm:12x", "train-spm:-5",
                          "train-spm:1", "sentencepiece"}) {
    EXPECT_THROW(parse_tokenizer_spec(bad), std::invalid_argument) << bad;
  }
  try {
    parse_tokenizer_spec("bpe");
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()),
              "tokenizer 'bpe': unknown tokenizer; use byte, spm:MODEL_FILE or "
              "train-spm:VOCAB_SIZE");
  }
  EXPECT_EQ(make_tokenizer("byte")->id(), "byte:v1");
  EXPECT_THROW(make_tokenizer("train-spm:500"), std::invalid_argument);  // no training text
}

TEST(SentencePieceTokenizer, TrainsAndRoundTrips) {
  TempDir dir;
  const std::string corpus = dir.file("corpus.txt");
  const std::string text = test::english_like_text(300 * 1024, 1);
  test::write_file(corpus, text);
  const std::string model = dir.file("m.model");
  const auto start = std::chrono::steady_clock::now();
  const auto tokenizer = make_tokenizer("train-spm:600", {corpus}, model);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20);
  ASSERT_TRUE(std::filesystem::is_regular_file(model));

  EXPECT_GT(tokenizer->vocab_size(), 300);  // 256 byte pieces, specials and real pieces
  EXPECT_LE(tokenizer->vocab_size(), 600);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  EXPECT_EQ(tokenizer->id(), "spm:" + fnv1a64_file_hex(model));
  EXPECT_EQ(tokenizer->id().size(), 4u + 16u);

  const auto ids = tokenizer->encode(text);
  EXPECT_LT(ids.size(), text.size() / 2) << "subword pieces should compress the text";
  for (uint32_t id : ids) ASSERT_LT(id, static_cast<uint32_t>(tokenizer->vocab_size()));
  EXPECT_EQ(tokenizer->decode(ids), text);
  // Text it never saw, with leading and repeated whitespace, blank lines and a long line.
  std::string unseen = "  Leading spaces\n\n\ttabs and 日本語 and emoji 🙂\r\nend  ";
  unseen += std::string(100000, 'x') + " " + std::string(70000, 'y') + "\n";
  EXPECT_EQ(tokenizer->decode(tokenizer->encode(unseen)), unseen);
  auto with_eos = tokenizer->encode("abc");
  with_eos.push_back(static_cast<uint32_t>(tokenizer->eos_id()));
  EXPECT_EQ(tokenizer->decode(with_eos), "abc");

  // Loading the file gives the same tokenizer; the id ties data to the exact model.
  SentencePieceTokenizer loaded(model);
  EXPECT_EQ(loaded.id(), tokenizer->id());
  EXPECT_EQ(loaded.encode(text), ids);
  EXPECT_EQ(tokenizer_for_id(tokenizer->id(), model)->vocab_size(), tokenizer->vocab_size());
  EXPECT_EQ(tokenizer_for_id("byte:v1")->vocab_size(), 257);
  EXPECT_THROW(tokenizer_for_id(tokenizer->id()), std::invalid_argument);
  EXPECT_THROW(tokenizer_for_id("spm:0000000000000000", model), DataError);
  EXPECT_THROW(tokenizer_for_id("wordpiece:1"), std::invalid_argument);
}

TEST(SentencePieceTokenizer, Errors) {
  TempDir dir;
  const std::string missing = dir.file("missing.model");
  try {
    SentencePieceTokenizer tokenizer(missing);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()), "SentencePiece model '" + missing + "': no such file");
  }
  const std::string garbage = dir.file("garbage.model");
  test::write_file(garbage, "not a protobuf at all");
  try {
    SentencePieceTokenizer tokenizer(garbage);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(
        std::string(e.what()).rfind("SentencePiece model '" + garbage + "': cannot load it", 0), 0u)
        << e.what();
  }
  // Byte fallback needs 256 byte pieces: a tiny vocabulary cannot work.
  const std::string corpus = dir.file("corpus.txt");
  test::write_file(corpus, test::english_like_text(20000, 2));
  try {
    SentencePieceTokenizer::train({corpus}, 100, dir.file("small.model"));
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("training a SentencePiece model (vocabulary 100) failed: "
                                         "Vocabulary size is smaller than required_chars"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace shc::data
