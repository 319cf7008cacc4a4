// The safetensors file format (https://github.com/huggingface/safetensors), for checkpoint shards
// and exported models that Python reads without this project (SPEC §7: `safetensors.numpy`,
// `safetensors.torch`, `safe_open`). Layout of a file:
//
//   8 bytes   N, the header length, unsigned 64-bit little-endian
//   N bytes   the header: a UTF-8 JSON object, padded with spaces so that 8 + N is a multiple of 8
//             {"__metadata__": {"key": "value", ...},                     (optional, strings only)
//              "<tensor name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
//              ...}
//   the rest  the byte buffer: each tensor's elements in row-major (C) order, little-endian;
//             data_offsets are relative to the buffer's start, and the tensors cover the buffer
//             exactly (no holes, no overlaps, nothing after the last one).
//
// Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL (the dtypes LibTorch computes with).
// Reading follows the validation rules of the reference implementation: a header of at most
// 100,000,000 bytes, offsets and shapes that agree, a fully covered buffer. Every problem is a
// CheckpointError whose message names the file.
//
// Crash tests: when the environment variable SHC_FAULT_KILL_AFTER_TENSORS=k is set, the process
// sends itself SIGKILL right after the k-th tensor that write_safetensors wrote in this process
// (counted from 1 across calls, only while the variable is set): that tensor's data has been
// written, the file has not been fsynced.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

// Same-directory include, so that the installed <shc/checkpoints/safetensors.h> finds it too.
#include "file_io.h"

namespace shc::checkpoints {

// The safetensors name of a dtype ("F32", "BF16", ...), nullptr for a dtype the format lacks.
const char* dtype_name(at::ScalarType dtype);
// The dtype of a safetensors dtype name; nullopt for a name this reader does not support.
std::optional<at::ScalarType> dtype_from_name(const std::string& name);

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;
using Metadata = std::map<std::string, std::string>;

// Writes `tensors` to `path` in the given order (header computed up front, then each tensor's
// bytes streamed after it) and fsyncs the file. Tensors may live on any device and have any
// strides: each is copied to a contiguous CPU tensor one at a time (peak extra memory: one
// tensor; none for contiguous CPU tensors, which are written straight from their memory).
// Returns each tensor's checksum (checksum.h) of the bytes written, in order. A duplicate or
// reserved ("__metadata__") name, an unsupported dtype or layout, or an I/O failure is a
// CheckpointError naming the file; a failed write can leave a partial file at `path` (callers
// that need atomicity write to a temporary name and rename, see file_io.h).
std::vector<std::string> write_safetensors(const std::string& path, const NamedTensors& tensors,
                                           const Metadata& metadata = {});

// An open safetensors file: the header is read and validated on construction, tensors are read
// on demand with pread(2) straight into the result's memory. Reads are safe from several threads.
class SafetensorsFile {
 public:
  // CheckpointError "cannot open '<path>': <strerror>" when the file cannot be opened, and
  // "corrupt safetensors file '<path>': <why>" for a bad header or a file too short for it.
  explicit SafetensorsFile(const std::string& path);

  struct Entry {
    std::string name;
    at::ScalarType dtype = at::kFloat;
    std::vector<int64_t> shape;
    int64_t begin = 0, end = 0;  // byte offsets in the data buffer
  };

  const std::vector<Entry>& entries() const { return entries_; }  // in buffer order
  const Entry* find(const std::string& name) const;               // nullptr if absent
  const Metadata& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

  // A new CPU tensor with the stored dtype and shape. CheckpointError if `name` is absent or the
  // file was cut short.
  at::Tensor read(const std::string& name) const;
  // Elements [start, start + count) of the flattened tensor as a 1-D CPU tensor, read without
  // reading the rest (the slice a rank loads when resharding).
  at::Tensor read_flat_range(const std::string& name, int64_t start, int64_t count) const;

 private:
  void parse_header(const std::string& text, int64_t buffer_bytes);
  const Entry& entry(const std::string& name) const;
  void read_bytes(const Entry& entry, int64_t offset, int64_t bytes, void* out) const;
  [[noreturn]] void corrupt(const std::string& why) const;

  std::string path_;
  UniqueFd fd_;
  int64_t buffer_start_ = 0;  // file offset of the data buffer: 8 + N
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in entries_
  Metadata metadata_;
};

}  // namespace shc::checkpoints
