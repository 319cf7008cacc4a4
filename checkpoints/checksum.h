// Tensor checksums for checkpoint manifests (SPEC §7: "a checksum of every tensor"), computed with
// xxHash's XXH3 (64-bit), which hashes at memory speed, so verifying a checkpoint costs little
// next to reading it. The text form names the algorithm, "xxh3-64:" + 16 lowercase hex digits, so
// a manifest stays readable and a later change of algorithm is detectable.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <string>

namespace shc::checkpoints {

// The tensor's elements in row-major order in CPU memory: the tensor itself when it is already a
// contiguous CPU tensor, else one copy (made straight from the source device, no intermediate).
at::Tensor contiguous_cpu(const at::Tensor& tensor);

// "xxh3-64:<16 hex digits>" of `bytes` bytes at `data`.
std::string checksum(const void* data, size_t bytes);

// The checksum of contiguous_cpu(tensor)'s bytes (what write_safetensors writes), whatever the
// tensor's device and strides.
std::string checksum(const at::Tensor& tensor);

}  // namespace shc::checkpoints
