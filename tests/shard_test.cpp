// The HDF5 shard format (SPEC §6): round trips, the attributes as plain HDF5 sees them, and a
// clear error naming the file for every kind of bad shard.
#include <hdf5.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>

#include <gtest/gtest.h>

#include "data/shard.h"
#include "tests/data_test_util.h"

namespace shc::data {
namespace {

using test::make_shard;
using test::TempDir;

// Writes a shard-like file with the plain HDF5 C API, so that tests can break any part of it.
struct RawShard {
  hid_t file_type = H5T_STD_U16LE;  // type of /tokens in the file
  std::vector<uint32_t> tokens;
  bool with_tokens = true;
  std::map<std::string, int64_t> ints;  // integer attributes; defaults filled in by write()
  std::optional<std::string> tokenizer = std::string("byte:v1");
  bool fixed_length_string = false;

  void write(const std::string& path) const {
    hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    if (with_tokens) {
      const hsize_t n = tokens.size();
      hid_t space = H5Screate_simple(1, &n, nullptr);
      hid_t set =
          H5Dcreate2(file, "tokens", file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      if (n > 0) H5Dwrite(set, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens.data());
      H5Dclose(set);
      H5Sclose(space);
    }
    for (const auto& [name, value] : ints) {
      hid_t space = H5Screate(H5S_SCALAR);
      hid_t attr = H5Acreate2(file, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
      H5Awrite(attr, H5T_NATIVE_INT64, &value);
      H5Aclose(attr);
      H5Sclose(space);
    }
    if (tokenizer) {
      hid_t type = H5Tcopy(H5T_C_S1);
      hid_t space = H5Screate(H5S_SCALAR);
      if (fixed_length_string) {
        H5Tset_size(type, tokenizer->size());
        hid_t attr = H5Acreate2(file, "tokenizer", type, space, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(attr, type, tokenizer->data());
        H5Aclose(attr);
      } else {
        H5Tset_size(type, H5T_VARIABLE);
        const char* text = tokenizer->c_str();
        hid_t attr = H5Acreate2(file, "tokenizer", type, space, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(attr, type, &text);
        H5Aclose(attr);
      }
      H5Sclose(space);
      H5Tclose(type);
    }
    H5Fclose(file);
  }
};

// A valid byte-level RawShard of n tokens; callers then break one thing.
RawShard valid_raw(size_t n = 100) {
  RawShard raw;
  for (size_t i = 0; i < n; ++i) raw.tokens.push_back(static_cast<uint32_t>(i % 257));
  raw.ints = {{"format_version", 1},
              {"vocab_size", 257},
              {"eos_id", 256},
              {"num_tokens", static_cast<int64_t>(n)}};
  return raw;
}

// The DataError message ShardReader(path) throws, or "" when it opens.
std::string open_error(const std::string& path) {
  try {
    ShardReader reader(path);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

TEST(Shard, RoundTripUint16WithDocOffsets) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  std::vector<uint32_t> tokens;
  for (uint32_t i = 0; i < 200000; ++i) tokens.push_back((i * 7919u) % 257u);
  {
    ShardWriter writer(path, 257, "byte:v1", 256);
    writer.mark_document_start();
    writer.append(tokens.data(), 1000);
    writer.mark_document_start();
    writer.append(tokens.data() + 1000, tokens.size() - 1000);
    writer.mark_document_start();  // at the end: a document starting in the next shard
    EXPECT_EQ(writer.num_tokens(), 200000);
    writer.close();
  }
  ShardReader reader(path);
  const ShardInfo& info = reader.info();
  EXPECT_EQ(info.path, path);
  EXPECT_EQ(info.vocab_size, 257);
  EXPECT_EQ(info.tokenizer, "byte:v1");
  EXPECT_EQ(info.eos_id, 256);
  EXPECT_EQ(info.num_tokens, 200000);
  EXPECT_EQ(info.token_bytes, 2);
  EXPECT_TRUE(info.has_doc_offsets);
  EXPECT_EQ(reader.read_range(0, 200000), tokens);
  EXPECT_EQ(reader.read_range(65530, 20),
            std::vector<uint32_t>(tokens.begin() + 65530, tokens.begin() + 65550));
  EXPECT_TRUE(reader.read_range(5, 0).empty());
  EXPECT_EQ(reader.read_doc_offsets(), (std::vector<int64_t>{0, 1000, 200000}));
}

TEST(Shard, Uint32ForLargeVocabulary) {
  TempDir dir;
  const std::string path = dir.file("big.h5");
  const std::vector<uint32_t> tokens = {0, 65535, 65536, 69999, 12};
  make_shard(path, tokens, 70000, "spm:0123456789abcdef", 2);
  ShardReader reader(path);
  EXPECT_EQ(reader.info().token_bytes, 4);
  EXPECT_EQ(reader.read_range(0, 5), tokens);
}

TEST(Shard, AttributesAsPlainHdf5SeesThem) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  make_shard(path, std::vector<uint32_t>(5000, 7), 257, "byte:v1", 256);

  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  const auto int_attr = [&](const char* name, size_t expected_bytes) {
    hid_t attr = H5Aopen(file, name, H5P_DEFAULT);
    EXPECT_GE(attr, 0) << name;
    hid_t type = H5Aget_type(attr);
    EXPECT_EQ(H5Tget_class(type), H5T_INTEGER) << name;
    EXPECT_EQ(H5Tget_size(type), expected_bytes) << name;
    int64_t value = -1;
    H5Aread(attr, H5T_NATIVE_INT64, &value);
    H5Tclose(type);
    H5Aclose(attr);
    return value;
  };
  EXPECT_EQ(int_attr("format_version", 4), 1);
  EXPECT_EQ(int_attr("vocab_size", 8), 257);
  EXPECT_EQ(int_attr("eos_id", 8), 256);
  EXPECT_EQ(int_attr("num_tokens", 8), 5000);
  {
    hid_t attr = H5Aopen(file, "tokenizer", H5P_DEFAULT);
    hid_t type = H5Aget_type(attr);
    EXPECT_EQ(H5Tget_class(type), H5T_STRING);
    EXPECT_GT(H5Tis_variable_str(type), 0);
    EXPECT_EQ(H5Tget_cset(type), H5T_CSET_ASCII);
    hid_t mem = H5Tcopy(H5T_C_S1);
    H5Tset_size(mem, H5T_VARIABLE);
    char* text = nullptr;
    ASSERT_GE(H5Aread(attr, mem, &text), 0);
    EXPECT_STREQ(text, "byte:v1");
    H5free_memory(text);
    H5Tclose(mem);
    H5Tclose(type);
    H5Aclose(attr);
  }
  {
    hid_t set = H5Dopen2(file, "tokens", H5P_DEFAULT);
    hid_t type = H5Dget_type(set);
    EXPECT_TRUE(H5Tequal(type, H5T_STD_U16LE) > 0);
    hid_t dcpl = H5Dget_create_plist(set);
    EXPECT_EQ(H5Pget_layout(dcpl), H5D_CHUNKED);
    EXPECT_EQ(H5Pget_nfilters(dcpl), 0) << "tokens must not be compressed";
    hid_t space = H5Dget_space(set);
    EXPECT_EQ(H5Sget_simple_extent_ndims(space), 1);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(space, &n, nullptr);
    EXPECT_EQ(n, 5000u);
    H5Sclose(space);
    H5Pclose(dcpl);
    H5Tclose(type);
    H5Dclose(set);
  }
  {
    hid_t set = H5Dopen2(file, "doc_offsets", H5P_DEFAULT);
    hid_t type = H5Dget_type(set);
    EXPECT_TRUE(H5Tequal(type, H5T_STD_I64LE) > 0);
    int64_t first = -1;
    H5Dread(set, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &first);
    EXPECT_EQ(first, 0);
    H5Tclose(type);
    H5Dclose(set);
  }
  H5Fclose(file);
}

// h5py is not a dependency: this runs only where it happens to be importable.
TEST(Shard, ReadableByH5py) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  make_shard(path, {1, 2, 3, 256}, 257, "byte:v1", 256);
  const std::string script = dir.file("check.py");
  test::write_file(script,
                   "import sys, h5py\n"
                   "f = h5py.File(sys.argv[1], 'r')\n"
                   "t = f['tokens']\n"
                   "assert str(t.dtype) == 'uint16', t.dtype\n"
                   "assert list(t[:]) == [1, 2, 3, 256]\n"
                   "a = f.attrs\n"
                   "tok = a['tokenizer']\n"
                   "tok = tok.decode() if isinstance(tok, bytes) else str(tok)\n"
                   "assert (int(a['format_version']), int(a['vocab_size']), int(a['eos_id']),"
                   " int(a['num_tokens']), tok) == (1, 257, 256, 4, 'byte:v1'), dict(a)\n"
                   "assert list(f['doc_offsets'][:]) == [0]\n");
  // SHC_TEST_PYTHON: the project venv's interpreter, where scripts/setup.sh installs h5py.
  EXPECT_EQ(
      std::system((std::string(SHC_TEST_PYTHON) + " '" + script + "' '" + path + "'").c_str()), 0);
}

TEST(Shard, AcceptsFixedLengthTokenizerString) {
  TempDir dir;
  RawShard raw = valid_raw();
  raw.fixed_length_string = true;
  raw.write(dir.file("a.h5"));
  ShardReader reader(dir.file("a.h5"));
  EXPECT_EQ(reader.info().tokenizer, "byte:v1");
  EXPECT_FALSE(reader.info().has_doc_offsets);
  EXPECT_TRUE(reader.read_doc_offsets().empty());
}

TEST(ShardErrors, MissingFile) {
  TempDir dir;
  const std::string path = dir.file("nope.h5");
  EXPECT_EQ(open_error(path), "data file '" + path + "': no such file");
}

TEST(ShardErrors, NotHdf5) {
  TempDir dir;
  const std::string path = dir.file("text.h5");
  test::write_file(path, "this is not an HDF5 file\n");
  EXPECT_EQ(open_error(path),
            "data file '" + path + "': not an HDF5 file (corrupt, truncated or not a shard)");
}

TEST(ShardErrors, TruncatedFile) {
  TempDir dir;
  const std::string path = dir.file("cut.h5");
  make_shard(path, std::vector<uint32_t>(300000, 5), 257);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  const std::string error = open_error(path);
  EXPECT_NE(error.find("data file '" + path + "'"), std::string::npos) << error;
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;
}

TEST(ShardErrors, WrongDtype) {
  TempDir dir;
  for (hid_t type : {H5T_STD_I32LE, H5T_IEEE_F32LE, H5T_STD_U8LE, H5T_STD_U64LE}) {
    RawShard raw = valid_raw();
    raw.file_type = type;
    const std::string path = dir.file("bad.h5");
    raw.write(path);
    const std::string error = open_error(path);
    EXPECT_EQ(error.rfind("data file '" + path + "': dataset 'tokens' has dtype ", 0), 0) << error;
    EXPECT_NE(error.find(", expected uint16 or uint32"), std::string::npos) << error;
  }
  RawShard raw = valid_raw();
  raw.file_type = H5T_STD_I32LE;
  raw.write(dir.file("i32.h5"));
  EXPECT_EQ(open_error(dir.file("i32.h5")), "data file '" + dir.file("i32.h5") +
                                                "': dataset 'tokens' has dtype int32, expected "
                                                "uint16 or uint32");
}

TEST(ShardErrors, NoTokensDataset) {
  TempDir dir;
  RawShard raw = valid_raw();
  raw.with_tokens = false;
  raw.write(dir.file("a.h5"));
  EXPECT_EQ(open_error(dir.file("a.h5")),
            "data file '" + dir.file("a.h5") + "': no 'tokens' dataset");
}

TEST(ShardErrors, MissingAttribute) {
  TempDir dir;
  for (const std::string name :
       {"format_version", "vocab_size", "tokenizer", "eos_id", "num_tokens"}) {
    RawShard raw = valid_raw();
    if (name == "tokenizer") {
      raw.tokenizer.reset();
    } else {
      raw.ints.erase(name);
    }
    const std::string path = dir.file("no_" + name + ".h5");
    raw.write(path);
    EXPECT_EQ(open_error(path), "data file '" + path + "': missing attribute '" + name + "'");
  }
}

TEST(ShardErrors, BadAttributeValues) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  const auto error_with = [&](const std::string& name, int64_t value) {
    RawShard raw = valid_raw();
    raw.ints[name] = value;
    raw.write(path);
    return open_error(path);
  };
  const std::string at = "data file '" + path + "': ";
  EXPECT_EQ(error_with("format_version", 2),
            at + "unsupported format_version 2 (this build reads 1)");
  EXPECT_EQ(error_with("num_tokens", 99),
            at + "attribute num_tokens is 99 but dataset 'tokens' holds 100 (truncated or "
                 "incomplete file?)");
  EXPECT_EQ(error_with("eos_id", 257), at + "eos_id 257 is outside [0, vocab_size 257)");
  EXPECT_EQ(error_with("vocab_size", 0), at + "vocab_size 0 is outside [1, 2^31 - 1]");
  EXPECT_EQ(error_with("vocab_size", 70000),
            at + "dataset 'tokens' has dtype uint16, too narrow for vocab_size 70000 (expected "
                 "uint32)");
}

TEST(ShardErrors, TokenIdOutOfVocabularyOnRead) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  RawShard raw = valid_raw();
  raw.tokens[37] = 300;
  raw.write(path);
  ShardReader reader(path);  // opening does not read the tokens
  EXPECT_EQ(reader.read_range(0, 37).size(), 37u);
  try {
    reader.read_range(30, 20);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()),
              "data file '" + path + "': token id 300 >= vocab_size 257 at offset 37");
  }
}

TEST(ShardErrors, ReadOutsideTheDataset) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  make_shard(path, std::vector<uint32_t>(10, 1), 257);
  ShardReader reader(path);
  EXPECT_THROW(reader.read_range(5, 6), DataError);
  EXPECT_THROW(reader.read_range(-1, 2), DataError);
}

TEST(ShardErrors, WriterRejectsIdsOutsideTheVocabulary) {
  TempDir dir;
  ShardWriter writer(dir.file("a.h5"), 257, "byte:v1", 256);
  writer.append({1, 2, 3});
  try {
    writer.append({4, 257});
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()),
              "data file '" + dir.file("a.h5") + "': token id 257 >= vocab_size 257 at offset 4");
  }
  EXPECT_THROW(ShardWriter(dir.file("b.h5"), 257, "byte:v1", 257), std::invalid_argument);
}

TEST(ShardErrors, UnclosedWriterLeavesAnInvalidShard) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  {
    ShardWriter writer(path, 257, "byte:v1", 256);
    writer.append(std::vector<uint32_t>(100, 3));
  }
  EXPECT_EQ(open_error(path), "data file '" + path + "': missing attribute 'format_version'");
}

}  // namespace
}  // namespace shc::data
