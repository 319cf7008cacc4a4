#include "gumbel_noise.h"

#include "splitmix.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/rand.h>
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

at::Tensor gumbel_uniform(const GumbelNoiseKey* key, std::int64_t layer, at::IntArrayRef shape,
                          const at::TensorOptions& options, const char* who) {
  at::Tensor u;
  if (key) {
    TORCH_CHECK(shape.size() == 3 && shape[0] == key->sequence_index.size(0), who,
                ": keyed Gumbel noise needs (batch, T, features) input with one sequence index per "
                "row; got ",
                shape, " for ", key->sequence_index.size(0), " sequence indices");
    auto host = keyed_uniform(*key, layer, shape[1], shape[2]);
    u = options.device().is_cuda()
            ? host.pin_memory().to(options.device(), options.dtype().toScalarType(),
                                   /*non_blocking=*/true)
            : host.to(options);
  } else {
    u = at::rand(shape, options);
  }
  return u.clamp(1e-10, 1.0 - 1e-7);
}

}  // namespace shc
