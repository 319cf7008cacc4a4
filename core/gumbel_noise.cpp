#include "gumbel_noise.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

namespace shc {
namespace {

// splitmix64's finaliser (Steele, Lea and Flood 2014): a bijective 64-bit mix whose outputs of
// consecutive inputs pass BigCrush; chaining it over the key's fields gives each tuple its own
// well-mixed 64-bit value.
std::uint64_t mix(std::uint64_t state, std::uint64_t field) {
  std::uint64_t z = state + field + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
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
