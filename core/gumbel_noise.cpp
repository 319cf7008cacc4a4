#include "gumbel_noise.h"

#include "splitmix.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

namespace shc {
namespace {

// Folds one more field of the key into the state.
std::uint64_t mix(std::uint64_t state, std::uint64_t field) {
  return splitmix64_mix(state + field + kSplitmixGamma);
}

}  // namespace

at::Tensor keyed_uniform(const GumbelNoiseKey& key, std::int64_t layer, std::int64_t tokens,
                         std::int64_t choices) {
  TORCH_CHECK(key.sequence_index.defined() && key.sequence_index.dim() == 1,
              "GumbelNoiseKey: sequence_index must be a 1-D tensor of global sequence indices");
  const at::Tensor index = key.sequence_index.to(at::kCPU, at::kLong).contiguous();
  const std::int64_t rows = index.size(0);
  at::Tensor out = at::empty({rows, tokens, choices}, at::TensorOptions().dtype(at::kDouble));
  double* values = out.data_ptr<double>();
  const std::int64_t* sequences = index.data_ptr<std::int64_t>();
  const std::uint64_t base = mix(mix(key.seed, std::uint64_t(key.step)), std::uint64_t(layer));
  for (std::int64_t b = 0; b < rows; ++b) {
    const std::uint64_t row = mix(base, std::uint64_t(sequences[b]));
    for (std::int64_t t = 0; t < tokens; ++t) {
      const std::uint64_t token = mix(row, std::uint64_t(t));
      for (std::int64_t j = 0; j < choices; ++j) {
        // The top 53 bits as a double in [0, 1).
        *values++ = double(mix(token, std::uint64_t(j)) >> 11) * 0x1.0p-53;
      }
    }
  }
  return out;
}

}  // namespace shc
