// Tests of the checkpoint file-format layer (checkpoints/): safetensors round trips for every
// dtype, validation of damaged files with their exact messages, checksums, durable writes, and
// the failure modes a checkpoint save must survive (a file size limit, a writer killed mid-way).
// Tests that need a child process are death tests (forked children; the *DeathTest suites run
// first, before LibTorch starts threads).
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "checkpoints/checksum.h"
#include "checkpoints/errors.h"
#include "checkpoints/file_io.h"
#include "checkpoints/safetensors.h"

namespace shc::checkpoints {
namespace {

namespace fs = std::filesystem;

// A fresh directory named after the test, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() / ("shc-checkpoints-" + std::to_string(::getpid()) + "-" +
                                         info->test_suite_name() + "-" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A safetensors file made by hand: `header` as given (padded to 8 bytes), then `buffer_bytes`
// zero bytes.
void write_raw_safetensors(const std::string& path, std::string header, size_t buffer_bytes) {
  header.resize((header.size() + 7) / 8 * 8, ' ');
  const uint64_t length = header.size();
  write_bytes(path, std::string(reinterpret_cast<const char*>(&length), 8) + header +
                        std::string(buffer_bytes, '\0'));
}

// The message of the CheckpointError that `open` throws ("" when it throws none).
template <typename F>
std::string error_of(F&& open) {
  try {
    open();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}

std::string corrupt_message(const std::string& path, const std::string& why) {
  return "corrupt safetensors file '" + path + "': " + why;
}

NamedTensors three_tensors() {
  return {{"a", torch::arange(1000, torch::kFloat)},
          {"b", torch::arange(24, torch::kLong).reshape({2, 3, 4})},
          {"c", torch::ones({7}, torch::kBFloat16)}};
}

int64_t file_size(const std::string& path) {
  return static_cast<int64_t>(fs::file_size(path));
}

// The child's file size limit (RLIMIT_FSIZE): a write past it raises SIGXFSZ, which kills the
// process, or fails with EFBIG when SIGXFSZ is ignored.
void limit_file_size(rlim_t bytes) {
  const rlimit limit{bytes, bytes};
  if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) std::_Exit(2);
}

// --- failures in a child process -------------------------------------------------------------

TEST(SafetensorsDeathTest, FileSizeLimitIsAReportedWriteErrorAndLeavesTheOldFile) {
  TempDir dir;
  const std::string complete = dir.file("complete.safetensors");
  const std::string failed = dir.file("failed.safetensors");
  const auto tensors = three_tensors();
  write_safetensors(complete, tensors);
  const int64_t complete_bytes = file_size(complete);
  // The child prints the message and exits 0 only when it is exactly the expected one.
  EXPECT_EXIT(
      {
        std::signal(SIGXFSZ, SIG_IGN);
        limit_file_size(2048);  // above the header, below the first tensor's end
        const std::string message = error_of([&] { write_safetensors(failed, tensors); });
        std::fprintf(stderr, "%s\n", message.c_str());
        std::_Exit(message == "cannot write '" + failed + "': File too large" ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "File too large");
  EXPECT_EQ(file_size(complete), complete_bytes);
  SafetensorsFile file(complete);
  EXPECT_TRUE(torch::equal(file.read("a"), tensors[0].second));
}

TEST(SafetensorsDeathTest, AtomicWriteUnderAFileSizeLimitKeepsTheOldContent) {
  TempDir dir;
  const std::string path = dir.file("latest");
  write_file_atomically(path, "step_10");
  EXPECT_EXIT(
      {
        std::signal(SIGXFSZ, SIG_IGN);
        limit_file_size(4096);
        const std::string message =
            error_of([&] { write_file_atomically(path, std::string(8192, 'x')); });
        std::fprintf(stderr, "%s\n", message.c_str());
        std::_Exit(message.find("': File too large") != std::string::npos ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "File too large");
  EXPECT_EQ(read_file(path), "step_10");
  EXPECT_EQ(std::distance(fs::directory_iterator(fs::path(path).parent_path()), {}), 1)
      << "the temporary file was not removed";
}

TEST(SafetensorsDeathTest, AtomicWriteKilledMidWayKeepsTheOldContent) {
  TempDir dir;
  const std::string path = dir.file("latest");
  write_file_atomically(path, "step_10");
  // SIGXFSZ not ignored: the kernel kills the writer inside write(2), with the temporary file
  // half written.
  EXPECT_EXIT(
      {
        limit_file_size(4096);
        write_file_atomically(path, std::string(8192, 'x'));
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGXFSZ), "");
  EXPECT_EQ(read_file(path), "step_10");
}

TEST(SafetensorsDeathTest, FaultInjectionKillsAfterTheKthTensorCountedAcrossCalls) {
  TempDir dir;
  const std::string first = dir.file("first.safetensors");
  const std::string second = dir.file("second.safetensors");
  const auto tensors = three_tensors();
  // k = 4: the first call writes its three tensors, the second is killed after its first.
  EXPECT_EXIT(
      {
        ::setenv("SHC_FAULT_KILL_AFTER_TENSORS", "4", 1);
        write_safetensors(first, tensors);
        write_safetensors(second, tensors);
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGKILL), "");
  EXPECT_NO_THROW(SafetensorsFile{first});
  // The killed file holds the header and exactly the first tensor's data.
  const int64_t complete_bytes = file_size(first);
  const int64_t missing = tensors[1].second.nbytes() + tensors[2].second.nbytes();
  EXPECT_EQ(file_size(second), complete_bytes - missing);
  EXPECT_NE(error_of([&] { SafetensorsFile{second}; }).find("truncated file"), std::string::npos);
}

// --- round trips ---------------------------------------------------------------------------

TEST(Safetensors, RoundTripsEveryDtypeAndShape) {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  torch::manual_seed(0);
  const NamedTensors tensors = {
      {"f64", torch::randn({3, 5}, torch::kDouble)},
      {"f32", torch::randn({4, 2, 3})},
      {"f16", torch::randn({9}).to(torch::kHalf)},
      {"bf16", torch::randn({2, 7}).to(torch::kBFloat16)},
      {"i64", torch::tensor({std::numeric_limits<int64_t>::min(), int64_t{-1},
                             std::numeric_limits<int64_t>::max()})},
      {"i32", torch::randint(-1000, 1000, {6}, torch::kInt)},
      {"i16", torch::randint(-30000, 30000, {3, 1}, torch::kShort)},
      {"i8", torch::randint(-128, 128, {5}, torch::kChar)},
      {"u8", torch::randint(0, 256, {2, 2}, torch::kByte)},
      {"bool", torch::rand({11}) > 0.5},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::empty({0, 3})},
      {"scalar_bf16", torch::tensor(-2.0).to(torch::kBFloat16)},
  };
  const auto checksums = write_safetensors(path, tensors);
  ASSERT_EQ(checksums.size(), tensors.size());
  uint64_t header_bytes = 0;
  std::ifstream(path, std::ios::binary).read(reinterpret_cast<char*>(&header_bytes), 8);
  EXPECT_EQ(header_bytes % 8, 0u) << "the data buffer starts 8-byte aligned";

  SafetensorsFile file(path);
  ASSERT_EQ(file.entries().size(), tensors.size());
  EXPECT_TRUE(file.metadata().empty());
  int64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, expected] = tensors[i];
    SCOPED_TRACE(name);
    const auto& entry = file.entries()[i];  // buffer order = write order
    EXPECT_EQ(entry.name, name);
    EXPECT_EQ(entry.dtype, expected.scalar_type());
    EXPECT_EQ(entry.shape, expected.sizes().vec());
    EXPECT_EQ(entry.begin, offset);
    offset = entry.end;
    EXPECT_EQ(file.find(name), &entry);
    const torch::Tensor read = file.read(name);
    EXPECT_EQ(read.scalar_type(), expected.scalar_type());
    EXPECT_EQ(read.sizes(), expected.sizes());
    EXPECT_TRUE(torch::equal(read, expected));
    EXPECT_EQ(checksums[i], checksum(expected));
    EXPECT_EQ(checksum(read), checksum(expected));
  }
  EXPECT_EQ(file.find("absent"), nullptr);
  EXPECT_EQ(error_of([&] { file.read("absent"); }), "no tensor 'absent' in '" + path + "'");
}

TEST(Safetensors, NoTensorsIsAValidFile) {
  TempDir dir;
  const std::string path = dir.file("none.safetensors");
  EXPECT_TRUE(write_safetensors(path, {}).empty());
  EXPECT_EQ(file_size(path), 16);  // "{}" padded to 8 bytes, as the reference writes it
  EXPECT_TRUE(SafetensorsFile(path).entries().empty());
}

TEST(Safetensors, WritesNonContiguousTensorsInRowMajorOrder) {
  TempDir dir;
  const std::string path = dir.file("strided.safetensors");
  const torch::Tensor base = torch::arange(60, torch::kFloat).reshape({3, 4, 5});
  const NamedTensors tensors = {
      {"transposed", base.transpose(0, 2)},
      {"stepped", base.slice(/*dim=*/2, 0, 5, /*step=*/2)},
      {"expanded", torch::arange(3, torch::kInt).unsqueeze(1).expand({3, 4})},
  };
  const auto checksums = write_safetensors(path, tensors);
  SafetensorsFile file(path);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, expected] = tensors[i];
    SCOPED_TRACE(name);
    ASSERT_FALSE(expected.is_contiguous());
    EXPECT_TRUE(torch::equal(file.read(name), expected.contiguous()));
    EXPECT_EQ(checksums[i], checksum(expected.contiguous()));
  }
}

TEST(Safetensors, MetadataRoundTrips) {
  TempDir dir;
  const std::string path = dir.file("meta.safetensors");
  const Metadata metadata = {{"format", "pt"},
                             {"config", R"({"d": 128, "name": "tiny"})"},
                             {"unicode", "naïve — ok"},
                             {"empty", ""}};
  write_safetensors(path, {{"w", torch::zeros({2})}}, metadata);
  SafetensorsFile file(path);
  EXPECT_EQ(file.metadata(), metadata);
  EXPECT_EQ(file.path(), path);
}

TEST(Safetensors, ReadFlatRangeEqualsTheSlice) {
  TempDir dir;
  const std::string path = dir.file("range.safetensors");
  const torch::Tensor bf16 = torch::randn({6, 7}).to(torch::kBFloat16);
  const torch::Tensor i64 = torch::arange(100, torch::kLong).reshape({10, 10});
  write_safetensors(path, {{"bf16", bf16}, {"i64", i64}});
  SafetensorsFile file(path);
  for (const auto& [start, count] :
       std::vector<std::pair<int64_t, int64_t>>{{0, 42}, {5, 13}, {41, 1}, {42, 0}, {0, 0}}) {
    EXPECT_TRUE(torch::equal(file.read_flat_range("bf16", start, count),
                             bf16.flatten().narrow(0, start, count)));
  }
  EXPECT_TRUE(torch::equal(file.read_flat_range("i64", 37, 50), torch::arange(37, 87)));
  EXPECT_EQ(error_of([&] { file.read_flat_range("i64", 60, 41); }),
            "cannot read elements [60, 101) of tensor 'i64' (100 elements) from '" + path + "'");
  EXPECT_FALSE(error_of([&] { file.read_flat_range("i64", -1, 2); }).empty());
  EXPECT_FALSE(error_of([&] { file.read_flat_range("i64", 0, -1); }).empty());
}

TEST(Safetensors, RejectsDuplicateNamesAndUnsupportedDtypes) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  EXPECT_EQ(error_of([&] {
              write_safetensors(path, {{"w", torch::zeros({2})}, {"w", torch::ones({2})}});
            }),
            "cannot write '" + path + "': duplicate tensor name 'w'");
  EXPECT_EQ(error_of([&] {
              write_safetensors(path, {{"__metadata__", torch::zeros({2})}});
            }),
            "cannot write '" + path + "': duplicate tensor name '__metadata__'");
  EXPECT_EQ(error_of([&] {
              write_safetensors(path, {{"z", torch::zeros({2}, torch::kComplexFloat)}});
            }),
            "cannot write '" + path +
                "': tensor 'z' has dtype ComplexFloat, which safetensors files do not hold");
  EXPECT_FALSE(fs::exists(path)) << "nothing is created for rejected input";
}

// --- damaged files -------------------------------------------------------------------------

TEST(Safetensors, MissingFile) {
  TempDir dir;
  const std::string path = dir.file("missing.safetensors");
  EXPECT_EQ(error_of([&] { SafetensorsFile{path}; }),
            "cannot open '" + path + "': No such file or directory");
  EXPECT_EQ(error_of([&] { SafetensorsFile{dir.file("")}; }),
            "cannot open '" + dir.file("") + "': Is a directory");
}

TEST(Safetensors, TruncatedFileGivesItsMessage) {
  TempDir dir;
  const std::string path = dir.file("cut.safetensors");
  write_safetensors(path, three_tensors());
  const int64_t full = file_size(path);
  const int64_t buffer = 4000 + 24 * 8 + 7 * 2;
  const int64_t header = full - 8 - buffer;

  fs::resize_file(path, full - 1);
  EXPECT_EQ(error_of([&] { SafetensorsFile{path}; }),
            corrupt_message(path,
                            "tensor 'c': data_offsets [4192, 4206] run past the end of the "
                            "4205-byte data buffer (truncated file?)"));
  fs::resize_file(path, 8 + header - 5);
  EXPECT_EQ(error_of([&] { SafetensorsFile{path}; }),
            corrupt_message(path, "header length " + std::to_string(header) +
                                      " runs past the end of the " +
                                      std::to_string(8 + header - 5) + "-byte file"));
  fs::resize_file(path, 3);
  EXPECT_EQ(
      error_of([&] { SafetensorsFile{path}; }),
      corrupt_message(path, "the file is 3 bytes long, too short for the 8-byte header length"));
}

TEST(Safetensors, TruncatedAfterOpeningFailsOnRead) {
  TempDir dir;
  const std::string path = dir.file("cut_later.safetensors");
  write_safetensors(path, three_tensors());
  SafetensorsFile file(path);
  fs::resize_file(path, file_size(path) - 10);
  EXPECT_TRUE(torch::equal(file.read("a"), three_tensors()[0].second));
  EXPECT_EQ(error_of([&] { file.read("c"); }),
            corrupt_message(path, "tensor 'c' is cut short (the file was truncated)"));
}

TEST(Safetensors, CorruptHeaderGivesItsMessage) {
  TempDir dir;
  const std::string path = dir.file("corrupt.safetensors");
  write_safetensors(path, three_tensors());
  std::string bytes = read_file(path);
  bytes[8] = 'X';  // the header's opening brace
  write_bytes(path, bytes);
  EXPECT_EQ(error_of([&] { SafetensorsFile{path}; }),
            corrupt_message(path, "header is not valid JSON"));

  std::string huge = read_file(path);
  const uint64_t length = 200'000'000;
  huge.replace(0, 8, reinterpret_cast<const char*>(&length), 8);
  write_bytes(path, huge);
  EXPECT_EQ(error_of([&] { SafetensorsFile{path}; }),
            corrupt_message(path, "header length 200000000 exceeds the limit of 100000000 bytes"));
}

TEST(Safetensors, HeaderValidationFollowsTheFormat) {
  TempDir dir;
  const std::string path = dir.file("raw.safetensors");
  const auto message = [&](const std::string& header, size_t buffer_bytes) {
    write_raw_safetensors(path, header, buffer_bytes);
    return error_of([&] { SafetensorsFile{path}; });
  };
  const auto corrupt = [&](const std::string& why) { return corrupt_message(path, why); };
  // Valid: offsets in any key order, a zero-size tensor anywhere.
  EXPECT_EQ(message(R"({"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]},)"
                    R"("e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},)"
                    R"("a":{"dtype":"F64","shape":[],"data_offsets":[0,8]}})",
                    16),
            "");
  EXPECT_EQ(message(R"([1, 2])", 0), corrupt("header is not a JSON object"));
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12),
            corrupt("the tensors cover 8 bytes of the 12-byte data buffer"));
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                    16),
            corrupt("tensor 'b': data_offsets [12, 16] leave a hole or overlap at byte 8"));
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    12),
            corrupt("tensor 'b': data_offsets [4, 12] leave a hole or overlap at byte 8"));
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
            corrupt("tensor 'a': shape [3] of F32 does not match data_offsets [0, 8]"));
  EXPECT_EQ(
      message(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
      corrupt("tensor 'a': shape [4294967296, 4294967296] of F32 does not match "
              "data_offsets [0, 8]"));
  EXPECT_EQ(message(R"({"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", 8),
            corrupt("tensor 'a': unsupported dtype \"C64\""));
  EXPECT_EQ(message(R"({"a":{"shape":[1],"data_offsets":[0,8]}})", 8),
            corrupt("tensor 'a': \"dtype\" is missing or not a string"));
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
            corrupt("tensor 'a': \"shape\" is not a list of non-negative integers"));
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4),
            corrupt("tensor 'a': \"data_offsets\" is not a pair [begin, end] of integers with 0 "
                    "<= begin <= end"));
  EXPECT_EQ(message(R"({"__metadata__":{"n":1}})", 0),
            corrupt("\"__metadata__\" is not a map of strings"));
}

// --- checksums and files -------------------------------------------------------------------

TEST(Checksum, IsXxh3OfTheRowMajorBytes) {
  EXPECT_EQ(checksum("", 0), "xxh3-64:2d06800538d394c2");  // XXH3_64bits of no bytes
  const torch::Tensor t = torch::arange(64, torch::kFloat).reshape({8, 8});
  EXPECT_EQ(checksum(t), checksum(t.data_ptr(), t.nbytes()));
  EXPECT_EQ(checksum(t), checksum(t.clone()));
  EXPECT_EQ(checksum(t.t()), checksum(t.t().contiguous()));
  EXPECT_NE(checksum(t.t()), checksum(t));

  torch::Tensor flipped = t.clone();
  static_cast<unsigned char*>(flipped.data_ptr())[37] ^= 1;
  EXPECT_NE(checksum(flipped), checksum(t));
  EXPECT_TRUE(std::regex_match(checksum(flipped), std::regex("xxh3-64:[0-9a-f]{16}")));
}

TEST(FileIo, WriteFileAtomicallyReplacesTheFileAndLeavesNoTemporary) {
  TempDir dir;
  const std::string path = dir.file("latest");
  write_file_atomically(path, "step_10");
  write_file_atomically(path, "step_20");
  EXPECT_EQ(read_file(path), "step_20");
  EXPECT_EQ(std::distance(fs::directory_iterator(fs::path(path).parent_path()), {}), 1);
  EXPECT_EQ(error_of([&] { write_file_atomically(dir.file("no/such/dir/latest"), "x"); }),
            "cannot write '" + dir.file("no/such/dir/latest") + ".tmp." +
                std::to_string(::getpid()) + "': No such file or directory");
}

TEST(FileIo, RenameReplacesAtomicallyWhatAnOpenReaderSees) {
  // The property write_file_atomically relies on: rename(2) swaps the directory entry, so a
  // reader sees the old file or the new one, and one that opened the old file keeps reading it.
  TempDir dir;
  const std::string path = dir.file("manifest.json");
  write_file_atomically(path, "old");
  std::ifstream old_reader(path);
  write_file_atomically(path, "new");
  std::string seen;
  old_reader >> seen;
  EXPECT_EQ(seen, "old");
  EXPECT_EQ(read_file(path), "new");
}

TEST(FileIo, ErrorsNameTheFile) {
  TempDir dir;
  const std::string missing = dir.file("missing");
  EXPECT_EQ(error_of([&] { read_file(missing); }),
            "cannot read '" + missing + "': No such file or directory");
  EXPECT_EQ(error_of([&] { fsync_path(missing); }),
            "cannot fsync '" + missing + "': No such file or directory");
  EXPECT_EQ(error_of([&] { FileWriter{dir.file("no/dir")}; }),
            "cannot write '" + dir.file("no/dir") + "': No such file or directory");
  EXPECT_NO_THROW(fsync_path(dir.file("")));  // a directory
  FileWriter writer(dir.file("f"));
  writer.write("abc", 3);
  writer.sync_and_close();
  EXPECT_EQ(read_file(dir.file("f")), "abc");
}

}  // namespace
}  // namespace shc::checkpoints
