// `shc prepare` through the real command line (launch/cli.cpp): option spellings, exit codes and
// messages. The data pipeline itself is tested without the jobs in the data_test executable.
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data/shard.h"
#include "launch/cli.h"
#include "tests/data_test_util.h"

namespace shc::data {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result shc(std::vector<std::string> args) {
  args.insert(args.begin(), "shc");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  const int code = launch::run_cli(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

TEST(PrepareCli, WritesShardsAndRefusesToOverwrite) {
  TempDir dir;
  test::write_file(dir.file("a.txt"), test::english_like_text(6000, 1));
  test::write_file(dir.file("b.txt"), test::english_like_text(3000, 2));
  const std::string out = dir.file("data");
  const std::vector<std::string> args = {"prepare",
                                         "--input",
                                         dir.file("a.txt"),
                                         dir.file("b.txt"),
                                         "--output",
                                         out,
                                         "--tokenizer",
                                         "byte",
                                         "--shard_tokens",
                                         "3000",
                                         "--val_fraction",
                                         "0.1",
                                         "--min_shard_tokens",
                                         "65"};
  Result r = shc(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::is_regular_file(out + "/train-00000.h5"));
  EXPECT_TRUE(fs::is_regular_file(out + "/train-00002.h5"));
  EXPECT_TRUE(fs::is_regular_file(out + "/val-00000.h5"));
  EXPECT_EQ(ShardReader(out + "/val-00000.h5").info().tokenizer, "byte:v1");

  r = shc(args);
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err, "shc prepare: output directory '" + out +
                       "' already holds shards (4 files, e.g. train-00000.h5); pass --overwrite "
                       "to replace them\n");

  std::vector<std::string> again = args;
  again.push_back("--overwrite");
  r = shc(again);
  EXPECT_EQ(r.code, 0) << r.err;
}

TEST(PrepareCli, BadInputIsExitCode3NamingTheFile) {
  TempDir dir;
  test::write_file(dir.file("empty.txt"), "");
  Result r = shc({"prepare", "--input", dir.file("missing.txt"), "--output", dir.file("o")});
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err, "shc prepare: input file '" + dir.file("missing.txt") + "': no such file\n");
  r = shc({"prepare", "--input", dir.file("empty.txt"), "--output", dir.file("o")});
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err, "shc prepare: input file '" + dir.file("empty.txt") + "' is empty\n");
  EXPECT_FALSE(fs::exists(dir.file("o")));
}

TEST(PrepareCli, UsageErrorsAreExitCode2) {
  TempDir dir;
  test::write_file(dir.file("a.txt"), "text\n");
  EXPECT_EQ(shc({"prepare", "--output", dir.file("o")}).code, 2);  // --input is required
  const Result r = shc({"prepare", "--input", dir.file("a.txt"), "--output", dir.file("o"),
                        "--tokenizer", "wordpiece"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("tokenizer 'wordpiece'"), std::string::npos) << r.err;
  EXPECT_EQ(shc({"prepare", "--help"}).code, 0);
}

TEST(PrepareCli, OptionsFromAnIniFile) {
  TempDir dir;
  test::write_file(dir.file("a.txt"), test::english_like_text(5000, 3));
  test::write_file(dir.file("prepare.ini"), "input = " + dir.file("a.txt") +
                                                "\noutput = " + dir.file("data") +
                                                "\nval_fraction = 0\nmin_shard_tokens = 65\n"
                                                "shard_tokens = 2000\noverwrite = true\n");
  const Result r = shc({"prepare", "--config", dir.file("prepare.ini")});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::is_regular_file(dir.file("data") + "/train-00002.h5"));
  EXPECT_FALSE(fs::exists(dir.file("data") + "/val-00000.h5"));
}

}  // namespace
}  // namespace shc::data
