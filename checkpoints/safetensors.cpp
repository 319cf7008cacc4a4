#include "checkpoints/safetensors.h"

#include <ATen/ops/empty.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>

#include "checkpoints/checksum.h"
#include "checkpoints/errors.h"

// The format stores little-endian numbers; both directions copy memory as it is.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O assumes a little-endian host");

namespace shc::checkpoints {
namespace {

// The reference implementation refuses larger headers (MAX_HEADER_SIZE).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeName {
  const char* name;
  at::ScalarType dtype;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

std::string offsets_text(int64_t begin, int64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// A JSON number that is an integer in [0, 2^63).
bool is_nonnegative_int64(const nlohmann::json& value) {
  return value.is_number_unsigned() &&
         value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
}

// SHC_FAULT_KILL_AFTER_TENSORS (see safetensors.h), called after each tensor's data is written.
void kill_if_fault_injected() {
  static std::atomic<long> written{0};
  const char* kill_after = std::getenv("SHC_FAULT_KILL_AFTER_TENSORS");
  if (kill_after != nullptr && ++written == std::atol(kill_after)) std::raise(SIGKILL);
}

}  // namespace

const char* dtype_name(at::ScalarType dtype) {
  for (const auto& d : kDtypes)
    if (d.dtype == dtype) return d.name;
  return nullptr;
}

std::optional<at::ScalarType> dtype_from_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.dtype;
  return std::nullopt;
}

std::vector<std::string> write_safetensors(const std::string& path, const NamedTensors& tensors,
                                           const Metadata& metadata) {
  const auto refuse = [&](const std::string& why) {
    throw CheckpointError("cannot write '" + path + "': " + why);
  };
  // The header first: offsets follow from shapes and dtypes alone. (Key order in the header does
  // not matter to readers: the format orders tensors by their offsets.)
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  int64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || header.contains(name))
      refuse("duplicate tensor name '" + name + "'");
    if (!tensor.defined()) refuse("tensor '" + name + "' is undefined");
    const char* dtype = dtype_name(tensor.scalar_type());
    if (dtype == nullptr)
      refuse("tensor '" + name + "' has dtype " + c10::toString(tensor.scalar_type()) +
             ", which safetensors files do not hold");
    if (tensor.layout() != at::kStrided) refuse("tensor '" + name + "' is not a dense tensor");
    const int64_t bytes = static_cast<int64_t>(tensor.nbytes());
    header[name] = {{"dtype", dtype},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    refuse("tensor names and metadata must be valid UTF-8");
  }
  text.resize((text.size() + 7) / 8 * 8, ' ');  // the data buffer starts 8-byte aligned

  FileWriter file(path);
  const uint64_t header_bytes = text.size();
  file.write(&header_bytes, sizeof(header_bytes));
  file.write(text.data(), text.size());
  std::vector<std::string> checksums;
  checksums.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor bytes = contiguous_cpu(tensor);  // no copy for contiguous CPU tensors
    file.write(bytes.data_ptr(), bytes.nbytes());
    checksums.push_back(checksum(bytes.data_ptr(), bytes.nbytes()));
    kill_if_fault_injected();
  }
  file.sync_and_close();
  return checksums;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
  struct stat info {};
  const int error = fd_.get() < 0 || ::fstat(fd_.get(), &info) != 0 ? errno
                    : S_ISDIR(info.st_mode)                         ? EISDIR
                                                                    : 0;
  if (error != 0) throw CheckpointError("cannot open '" + path + "': " + std::strerror(error));
  const int64_t file_bytes = info.st_size;
  uint64_t header_bytes = 0;
  if (file_bytes < 8 || ::pread(fd_.get(), &header_bytes, 8, 0) != 8)
    corrupt("the file is " + std::to_string(file_bytes) +
            " bytes long, too short for the 8-byte header length");
  if (header_bytes > kMaxHeaderBytes)
    corrupt("header length " + std::to_string(header_bytes) + " exceeds the limit of " +
            std::to_string(kMaxHeaderBytes) + " bytes");
  if (8 + static_cast<int64_t>(header_bytes) > file_bytes)
    corrupt("header length " + std::to_string(header_bytes) + " runs past the end of the " +
            std::to_string(file_bytes) + "-byte file");
  std::string text(header_bytes, '\0');
  if (::pread(fd_.get(), text.data(), text.size(), 8) != static_cast<ssize_t>(text.size()))
    corrupt("cannot read the " + std::to_string(header_bytes) + "-byte header");
  buffer_start_ = 8 + static_cast<int64_t>(header_bytes);
  parse_header(text, file_bytes - buffer_start_);
}

void SafetensorsFile::parse_header(const std::string& text, int64_t buffer_bytes) {
  const auto header = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) corrupt("header is not valid JSON");
  if (!header.is_object()) corrupt("header is not a JSON object");
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) corrupt("\"__metadata__\" is not a map of strings");
      for (const auto& [name, text_value] : value.items()) {
        if (!text_value.is_string()) corrupt("\"__metadata__\" is not a map of strings");
        metadata_[name] = text_value.get<std::string>();
      }
      continue;
    }
    const auto bad = [&](const std::string& why) { corrupt("tensor '" + key + "': " + why); };
    if (!value.is_object()) bad("the entry is not a JSON object");
    Entry entry;
    entry.name = key;

    const auto dtype = value.find("dtype");
    if (dtype == value.end() || !dtype->is_string()) bad("\"dtype\" is missing or not a string");
    const auto known = dtype_from_name(dtype->get<std::string>());
    if (!known) bad("unsupported dtype " + dtype->dump());
    entry.dtype = *known;

    const auto shape = value.find("shape");
    if (shape == value.end() || !shape->is_array() ||
        !std::all_of(shape->begin(), shape->end(), is_nonnegative_int64))
      bad("\"shape\" is not a list of non-negative integers");
    for (const auto& size : *shape) entry.shape.push_back(size.get<int64_t>());

    const auto offsets = value.find("data_offsets");
    if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 ||
        !is_nonnegative_int64((*offsets)[0]) || !is_nonnegative_int64((*offsets)[1]) ||
        (*offsets)[0] > (*offsets)[1])
      bad("\"data_offsets\" is not a pair [begin, end] of integers with 0 <= begin <= end");
    entry.begin = (*offsets)[0].get<int64_t>();
    entry.end = (*offsets)[1].get<int64_t>();

    int64_t bytes = static_cast<int64_t>(c10::elementSize(entry.dtype));
    bool overflow = false;
    for (const int64_t size : entry.shape) overflow |= __builtin_mul_overflow(bytes, size, &bytes);
    if (overflow || bytes != entry.end - entry.begin)
      bad("shape " + shape_text(entry.shape) + " of " + dtype->get<std::string>() +
          " does not match data_offsets " + offsets_text(entry.begin, entry.end));
    if (entry.end > buffer_bytes)
      bad("data_offsets " + offsets_text(entry.begin, entry.end) + " run past the end of the " +
          std::to_string(buffer_bytes) + "-byte data buffer (truncated file?)");
    entries_.push_back(std::move(entry));
  }

  std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  int64_t covered = 0;
  for (const Entry& entry : entries_) {
    if (entry.begin != covered)
      corrupt("tensor '" + entry.name + "': data_offsets " + offsets_text(entry.begin, entry.end) +
              " leave a hole or overlap at byte " + std::to_string(covered));
    covered = entry.end;
  }
  if (covered != buffer_bytes)
    corrupt("the tensors cover " + std::to_string(covered) + " bytes of the " +
            std::to_string(buffer_bytes) + "-byte data buffer");
  for (size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
}

const SafetensorsFile::Entry* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  const Entry* found = find(name);
  if (found == nullptr) throw CheckpointError("no tensor '" + name + "' in '" + path_ + "'");
  return *found;
}

at::Tensor SafetensorsFile::read(const std::string& name) const {
  const Entry& stored = entry(name);
  at::Tensor tensor = at::empty(stored.shape, at::TensorOptions().dtype(stored.dtype));
  read_bytes(stored, stored.begin, stored.end - stored.begin, tensor.data_ptr());
  return tensor;
}

at::Tensor SafetensorsFile::read_flat_range(const std::string& name, int64_t start,
                                            int64_t count) const {
  const Entry& stored = entry(name);
  const int64_t element_bytes = static_cast<int64_t>(c10::elementSize(stored.dtype));
  const int64_t numel = (stored.end - stored.begin) / element_bytes;
  if (start < 0 || count < 0 || start > numel - count)
    throw CheckpointError("cannot read elements [" + std::to_string(start) + ", " +
                          std::to_string(start + count) + ") of tensor '" + name + "' (" +
                          std::to_string(numel) + " elements) from '" + path_ + "'");
  at::Tensor tensor = at::empty({count}, at::TensorOptions().dtype(stored.dtype));
  read_bytes(stored, stored.begin + start * element_bytes, count * element_bytes,
             tensor.data_ptr());
  return tensor;
}

void SafetensorsFile::read_bytes(const Entry& entry, int64_t offset, int64_t bytes,
                                 void* out) const {
  char* next = static_cast<char*>(out);
  off_t position = buffer_start_ + offset;
  while (bytes > 0) {
    const ssize_t n = ::pread(fd_.get(), next, static_cast<size_t>(bytes), position);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      throw CheckpointError("cannot read tensor '" + entry.name + "' from '" + path_ +
                            "': " + std::strerror(errno));
    if (n == 0) corrupt("tensor '" + entry.name + "' is cut short (the file was truncated)");
    next += n;
    position += n;
    bytes -= n;
  }
}

void SafetensorsFile::corrupt(const std::string& why) const {
  throw CheckpointError("corrupt safetensors file '" + path_ + "': " + why);
}

}  // namespace shc::checkpoints
