// Helpers shared by the data/ tests: temporary directories, generated text, shards.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data/shard.h"

namespace shc::data::test {

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = "shc-data-" + std::to_string(::getpid());
    if (info != nullptr) name += std::string("-") + info->test_suite_name() + "-" + info->name();
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Deterministic English-like prose of about `bytes` bytes: sentences of common words, some
// paragraphs, punctuation, a little non-ASCII text and irregular whitespace.
inline std::string english_like_text(size_t bytes, uint64_t seed) {
  static const char* const kWords[] = {
      "the",      "and",   "of",     "to",     "in",    "that",    "he",     "shall",
      "unto",     "for",   "his",    "they",   "be",    "is",      "with",   "not",
      "all",      "thou",  "people", "king",   "land",  "house",   "son",    "day",
      "hand",     "came",  "before", "upon",   "earth", "men",     "over",   "children",
      "city",     "word",  "heart",  "heaven", "water", "light",   "river",  "mountain",
      "bread",    "wine",  "gold",   "silver", "sheep", "field",   "garden", "morning",
      "evening",  "spoke", "went",   "saw",    "gave",  "brought", "answer", "journey",
      "stranger", "naïve", "café",   "über",   "élan",  "façade",  "señor",  "garçon"};
  constexpr size_t kCount = sizeof(kWords) / sizeof(kWords[0]);
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  const auto next = [&]() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state >> 33;
  };
  std::string text;
  text.reserve(bytes + 128);
  while (text.size() < bytes) {
    const int words = 4 + static_cast<int>(next() % 14);
    for (int i = 0; i < words; ++i) {
      std::string word = kWords[next() % kCount];
      if (i == 0 && word[0] >= 'a' && word[0] <= 'z') word[0] = static_cast<char>(word[0] - 32);
      if (i > 0) text += (next() % 50 == 0) ? "  " : " ";
      text += word;
      if (i + 1 < words && next() % 9 == 0) text += ",";
    }
    switch (next() % 8) {
      case 0:
        text += ".\n\n";
        break;
      case 1:
        text += "?\n";
        break;
      case 2:
        text += "; “quoted” — 1234.\n";
        break;
      default:
        text += ". ";
    }
  }
  return text;
}

// A shard whose tokens are given, through the real writer.
inline void make_shard(const std::string& path, const std::vector<uint32_t>& tokens,
                       int64_t vocab_size, const std::string& tokenizer = "byte:v1",
                       int64_t eos_id = 0) {
  ShardWriter writer(path, vocab_size, tokenizer, eos_id);
  writer.mark_document_start();
  writer.append(tokens);
  writer.close();
}

}  // namespace shc::data::test
