#include "checkpoints/checksum.h"

#include <xxhash.h>

#include <cstdio>

namespace shc::checkpoints {

std::string checksum(const void* data, size_t bytes) {
  const XXH64_hash_t hash = XXH3_64bits(data, bytes);
  char text[sizeof("xxh3-64:") + 16];
  std::snprintf(text, sizeof(text), "xxh3-64:%016llx", static_cast<unsigned long long>(hash));
  return text;
}

at::Tensor contiguous_cpu(const at::Tensor& tensor) {
  if (tensor.is_cpu()) return tensor.contiguous();
  // A plain to(kCPU) would keep a permuted tensor's strides, and contiguous() copy it again.
  return tensor.to(at::kCPU, tensor.scalar_type(), /*non_blocking=*/false, /*copy=*/false,
                   at::MemoryFormat::Contiguous);
}

std::string checksum(const at::Tensor& tensor) {
  const at::Tensor bytes = contiguous_cpu(tensor);
  return checksum(bytes.data_ptr(), bytes.nbytes());
}

}  // namespace shc::checkpoints
