#include "data/shard.h"

#include <algorithm>
#include <filesystem>
#include <limits>

#include "data/hdf5_util.h"

namespace shc::data {

namespace {

using h5::Handle;

// Tokens per chunk of the `tokens` dataset (128 KiB as uint16). Readers bypass the chunk cache
// (see ShardReader), so a sequence read touches only its own bytes whatever the chunk size.
constexpr hsize_t kChunkTokens = 1 << 16;
// The writer extends the dataset in pieces of this many tokens.
constexpr size_t kWriteBatchTokens = 1 << 20;
constexpr int64_t kMaxVocab = std::numeric_limits<int32_t>::max();

std::string where(const std::string& path) {
  return "data file '" + path + "': ";
}

// Destroys a half-built object (closing its HDF5 handles) when a constructor throws; disarmed once
// construction succeeded.
template <typename T>
struct ResetOnFailure {
  std::unique_ptr<T>& impl;
  bool armed = true;
  ~ResetOnFailure() {
    if (armed) impl.reset();
  }
};

}  // namespace

std::recursive_mutex& hdf5_mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

// ---------------------------------------------------------------------------------------------
// ShardWriter

struct ShardWriter::Impl {
  std::string path;
  int64_t vocab_size = 0;
  std::string tokenizer;
  int64_t eos_id = 0;
  Handle file;
  Handle tokens;
  int64_t written = 0;  // tokens already in the dataset
  std::vector<uint32_t> pending;
  std::vector<int64_t> doc_offsets;
  bool closed = false;

  int64_t total() const { return written + static_cast<int64_t>(pending.size()); }

  void flush() {
    if (pending.empty()) return;
    const hsize_t start = static_cast<hsize_t>(written);
    const hsize_t count = pending.size();
    const hsize_t new_size = start + count;
    bool ok = H5Dset_extent(tokens.get(), &new_size) >= 0;
    if (ok) {
      Handle file_space(H5Dget_space(tokens.get()), H5Sclose);
      Handle mem_space(H5Screate_simple(1, &count, nullptr), H5Sclose);
      ok = file_space && mem_space &&
           H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &count,
                               nullptr) >= 0 &&
           H5Dwrite(tokens.get(), H5T_NATIVE_UINT32, mem_space.get(), file_space.get(), H5P_DEFAULT,
                    pending.data()) >= 0;
    }
    if (!ok) throw DataError(where(path) + "cannot write tokens (disk full?)");
    written += static_cast<int64_t>(count);
    pending.clear();
  }
};

ShardWriter::ShardWriter(const std::string& path, int64_t vocab_size, const std::string& tokenizer,
                         int64_t eos_id, int64_t size_hint)
    : impl_(std::make_unique<Impl>()) {
  if (vocab_size < 1 || vocab_size > kMaxVocab) {
    throw std::invalid_argument(where(path) + "vocab_size " + std::to_string(vocab_size) +
                                " is outside [1, 2^31 - 1]");
  }
  if (eos_id < 0 || eos_id >= vocab_size) {
    throw std::invalid_argument(where(path) + "eos_id " + std::to_string(eos_id) +
                                " is outside [0, vocab_size)");
  }
  Impl& s = *impl_;
  s.path = path;
  s.vocab_size = vocab_size;
  s.tokenizer = tokenizer;
  s.eos_id = eos_id;
  std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
  h5::silence_errors();
  // On failure the handles opened so far are closed here, under the lock.
  ResetOnFailure<Impl> cleanup{impl_};
  s.file = Handle(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  if (!s.file) throw DataError(where(path) + "cannot create the file");
  const hsize_t zero = 0, unlimited = H5S_UNLIMITED;
  Handle space(H5Screate_simple(1, &zero, &unlimited), H5Sclose);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  const hsize_t chunk = size_hint > 0
                            ? std::min<hsize_t>(kChunkTokens, static_cast<hsize_t>(size_hint))
                            : kChunkTokens;
  H5Pset_chunk(dcpl.get(), 1, &chunk);
  const hid_t type = vocab_size <= 65535 ? H5T_STD_U16LE : H5T_STD_U32LE;
  s.tokens = Handle(
      H5Dcreate2(s.file.get(), "tokens", type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
      H5Dclose);
  if (!s.tokens) throw DataError(where(path) + "cannot create dataset 'tokens'");
  cleanup.armed = false;
}

ShardWriter::~ShardWriter() {
  if (!impl_) return;
  std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
  impl_->tokens.reset();
  impl_->file.reset();
}

void ShardWriter::append(const uint32_t* tokens, size_t count) {
  Impl& s = *impl_;
  if (s.closed) throw std::logic_error(where(s.path) + "append after close");
  for (size_t i = 0; i < count; ++i) {
    if (tokens[i] >= static_cast<uint64_t>(s.vocab_size)) {
      throw DataError(where(s.path) + "token id " + std::to_string(tokens[i]) + " >= vocab_size " +
                      std::to_string(s.vocab_size) + " at offset " +
                      std::to_string(s.total() + static_cast<int64_t>(i)));
    }
  }
  while (count > 0) {
    const size_t take = std::min(count, kWriteBatchTokens - s.pending.size());
    s.pending.insert(s.pending.end(), tokens, tokens + take);
    tokens += take;
    count -= take;
    if (s.pending.size() >= kWriteBatchTokens) {
      std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
      s.flush();
    }
  }
}

void ShardWriter::mark_document_start() {
  Impl& s = *impl_;
  if (s.doc_offsets.empty() || s.doc_offsets.back() != s.total()) {
    s.doc_offsets.push_back(s.total());
  }
}

void ShardWriter::close() {
  Impl& s = *impl_;
  if (s.closed) return;
  std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
  h5::silence_errors();
  s.flush();
  try {
    const hid_t root = s.file.get();
    const hsize_t n_docs = s.doc_offsets.size();
    Handle space(H5Screate_simple(1, &n_docs, nullptr), H5Sclose);
    Handle docs(H5Dcreate2(root, "doc_offsets", H5T_STD_I64LE, space.get(), H5P_DEFAULT,
                           H5P_DEFAULT, H5P_DEFAULT),
                H5Dclose);
    if (!docs || (n_docs > 0 && H5Dwrite(docs.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL,
                                         H5P_DEFAULT, s.doc_offsets.data()) < 0)) {
      throw std::runtime_error("cannot write dataset 'doc_offsets'");
    }
    h5::write_int_attribute(root, "format_version", H5T_STD_I32LE, kShardFormatVersion);
    h5::write_int_attribute(root, "vocab_size", H5T_STD_I64LE, s.vocab_size);
    h5::write_string_attribute(root, "tokenizer", s.tokenizer);
    h5::write_int_attribute(root, "eos_id", H5T_STD_I64LE, s.eos_id);
    h5::write_int_attribute(root, "num_tokens", H5T_STD_I64LE, s.written);
  } catch (const std::runtime_error& e) {
    throw DataError(where(s.path) + e.what());
  }
  const bool ok = s.tokens.close() && s.file.close();
  s.closed = true;
  if (!ok) throw DataError(where(s.path) + "cannot close the file (disk full?)");
}

int64_t ShardWriter::num_tokens() const {
  return impl_->total();
}
const std::string& ShardWriter::path() const {
  return impl_->path;
}

// ---------------------------------------------------------------------------------------------
// ShardReader

struct ShardReader::Impl {
  ShardInfo info;
  Handle file;
  Handle tokens;
};

ShardReader::ShardReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.info.path = path;
  const std::string at = where(path);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw DataError(at + "no such file");
  if (std::filesystem::is_directory(path, ec)) throw DataError(at + "is a directory");

  std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
  h5::silence_errors();
  // On failure the handles opened so far are closed here, under the lock.
  ResetOnFailure<Impl> cleanup{impl_};
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    throw DataError(at + "not an HDF5 file (corrupt, truncated or not a shard)");
  }
  s.file = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!s.file) throw DataError(at + "cannot open it as HDF5 (corrupt or truncated file?)");
  const hid_t root = s.file.get();

  if (H5Lexists(root, "tokens", H5P_DEFAULT) <= 0) throw DataError(at + "no 'tokens' dataset");
  // No chunk cache: a read of one sequence then touches only that sequence's bytes.
  Handle dapl(H5Pcreate(H5P_DATASET_ACCESS), H5Pclose);
  H5Pset_chunk_cache(dapl.get(), 0, 0, 1.0);
  s.tokens = Handle(H5Dopen2(root, "tokens", dapl.get()), H5Dclose);
  if (!s.tokens) throw DataError(at + "'tokens' is not a readable dataset");
  {
    Handle type(H5Dget_type(s.tokens.get()), H5Tclose);
    const bool is_unsigned =
        type && H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_sign(type.get()) == H5T_SGN_NONE;
    const size_t size = type ? H5Tget_size(type.get()) : 0;
    if (!is_unsigned || (size != 2 && size != 4)) {
      throw DataError(at + "dataset 'tokens' has dtype " + h5::describe_type(type.get()) +
                      ", expected uint16 or uint32");
    }
    s.info.token_bytes = static_cast<int>(size);
  }
  hsize_t length = 0;
  {
    Handle space(H5Dget_space(s.tokens.get()), H5Sclose);
    const int rank = space ? H5Sget_simple_extent_ndims(space.get()) : -1;
    if (rank != 1) {
      throw DataError(at + "dataset 'tokens' has " + std::to_string(rank) +
                      " dimensions, expected 1");
    }
    H5Sget_simple_extent_dims(space.get(), &length, nullptr);
  }

  std::string why;
  auto int_attr = [&](const char* name) {
    auto value = h5::read_int_attribute(root, name, &why);
    if (!value) throw DataError(at + why);
    return *value;
  };
  const int64_t version = int_attr("format_version");
  if (version != kShardFormatVersion) {
    throw DataError(at + "unsupported format_version " + std::to_string(version) +
                    " (this build reads " + std::to_string(kShardFormatVersion) + ")");
  }
  s.info.vocab_size = int_attr("vocab_size");
  if (s.info.vocab_size < 1 || s.info.vocab_size > kMaxVocab) {
    throw DataError(at + "vocab_size " + std::to_string(s.info.vocab_size) +
                    " is outside [1, 2^31 - 1]");
  }
  if (s.info.token_bytes == 2 && s.info.vocab_size > 65536) {
    throw DataError(at + "dataset 'tokens' has dtype uint16, too narrow for vocab_size " +
                    std::to_string(s.info.vocab_size) + " (expected uint32)");
  }
  auto tokenizer = h5::read_string_attribute(root, "tokenizer", &why);
  if (!tokenizer) throw DataError(at + why);
  if (tokenizer->empty()) throw DataError(at + "attribute 'tokenizer' is empty");
  s.info.tokenizer = *tokenizer;
  s.info.eos_id = int_attr("eos_id");
  if (s.info.eos_id < 0 || s.info.eos_id >= s.info.vocab_size) {
    throw DataError(at + "eos_id " + std::to_string(s.info.eos_id) + " is outside [0, vocab_size " +
                    std::to_string(s.info.vocab_size) + ")");
  }
  s.info.num_tokens = int_attr("num_tokens");
  if (s.info.num_tokens != static_cast<int64_t>(length)) {
    throw DataError(at + "attribute num_tokens is " + std::to_string(s.info.num_tokens) +
                    " but dataset 'tokens' holds " + std::to_string(length) +
                    " (truncated or incomplete file?)");
  }
  s.info.has_doc_offsets = H5Lexists(root, "doc_offsets", H5P_DEFAULT) > 0;
  cleanup.armed = false;
}

ShardReader::~ShardReader() {
  if (!impl_) return;
  std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
  impl_->tokens.reset();
  impl_->file.reset();
}

ShardReader::ShardReader(ShardReader&&) noexcept = default;

ShardReader& ShardReader::operator=(ShardReader&& other) noexcept {
  if (this != &other) {
    {
      std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
      impl_.reset();
    }
    impl_ = std::move(other.impl_);
  }
  return *this;
}

const ShardInfo& ShardReader::info() const {
  return impl_->info;
}

void ShardReader::read_range(int64_t offset, int64_t count, uint32_t* out) const {
  const Impl& s = *impl_;
  const std::string& path = s.info.path;
  if (offset < 0 || count < 0 || offset > s.info.num_tokens - count) {
    throw DataError(where(path) + "read of tokens [" + std::to_string(offset) + ", " +
                    std::to_string(offset + count) + ") is outside the " +
                    std::to_string(s.info.num_tokens) + " tokens it holds");
  }
  if (count == 0) return;
  {
    std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
    h5::silence_errors();
    const hsize_t start = static_cast<hsize_t>(offset), n = static_cast<hsize_t>(count);
    Handle file_space(H5Dget_space(s.tokens.get()), H5Sclose);
    Handle mem_space(H5Screate_simple(1, &n, nullptr), H5Sclose);
    // Read in the file's own width: HDF5's type conversion costs more than the read itself for
    // sequence-sized requests. uint16 goes into the first half of out and is widened in place,
    // back to front.
    const auto read_tokens = [&](hid_t mem, hid_t file) {
      if (s.info.token_bytes == 4) {
        return H5Dread(s.tokens.get(), H5T_NATIVE_UINT32, mem, file, H5P_DEFAULT, out) >= 0;
      }
      auto* narrow = reinterpret_cast<uint16_t*>(out);
      if (H5Dread(s.tokens.get(), H5T_NATIVE_UINT16, mem, file, H5P_DEFAULT, narrow) < 0) {
        return false;
      }
      for (size_t i = static_cast<size_t>(count); i-- > 0;) out[i] = narrow[i];
      return true;
    };
    const bool ok =
        file_space && mem_space &&
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &n, nullptr) >= 0 &&
        read_tokens(mem_space.get(), file_space.get());
    if (!ok) {
      throw DataError(where(path) + "cannot read tokens [" + std::to_string(offset) + ", " +
                      std::to_string(offset + count) + ") (corrupt or truncated file?)");
    }
  }
  const uint32_t vocab = static_cast<uint32_t>(s.info.vocab_size);
  for (int64_t i = 0; i < count; ++i) {
    if (out[i] >= vocab) {
      throw DataError(where(path) + "token id " + std::to_string(out[i]) + " >= vocab_size " +
                      std::to_string(vocab) + " at offset " + std::to_string(offset + i));
    }
  }
}

std::vector<uint32_t> ShardReader::read_range(int64_t offset, int64_t count) const {
  std::vector<uint32_t> out(static_cast<size_t>(std::max<int64_t>(count, 0)));
  read_range(offset, count, out.data());
  return out;
}

std::vector<int64_t> ShardReader::read_doc_offsets() const {
  const Impl& s = *impl_;
  if (!s.info.has_doc_offsets) return {};
  std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
  h5::silence_errors();
  const std::string at = where(s.info.path);
  Handle docs(H5Dopen2(s.file.get(), "doc_offsets", H5P_DEFAULT), H5Dclose);
  if (!docs) throw DataError(at + "'doc_offsets' is not a readable dataset");
  Handle space(H5Dget_space(docs.get()), H5Sclose);
  if (!space || H5Sget_simple_extent_ndims(space.get()) != 1) {
    throw DataError(at + "dataset 'doc_offsets' must be 1-D");
  }
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.get(), &n, nullptr);
  std::vector<int64_t> out(n);
  if (n > 0 &&
      H5Dread(docs.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0) {
    throw DataError(at + "cannot read dataset 'doc_offsets'");
  }
  return out;
}

}  // namespace shc::data
