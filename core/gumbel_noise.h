// Counter-based Gumbel noise for the rank selector (SPEC §5: random ops under data parallelism).
// Each uniform draw is a pure function of (seed, step, global sequence index, layer, token,
// choice) — a counter-based generator in the sense of Salmon et al. 2011 ("Parallel random
// numbers: as easy as 1, 2, 3") — instead of the next value of a generator's stream. So the noise
// a sequence sees does not depend on which rank or micro-batch it lands in (data-parallel runs
// equal one process), a backward recomputation replays it without touching any generator state
// (no lock, no save and restore), and a resumed run draws what the original run would have.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>

namespace shc {

struct GumbelNoiseKey {
  std::uint64_t seed = 0;
  std::int64_t step = 0;
  // (batch) int64, CPU: the global index of each row's sequence in the data order.
  at::Tensor sequence_index;
};

// Uniform values in [0, 1) of shape (batch, T, n) for layer `layer`: element (b, t, j) is keyed
// by (seed, step, sequence_index[b], layer, t, j). float64 on the CPU; callers move and cast.
at::Tensor keyed_uniform(const GumbelNoiseKey& key, std::int64_t layer, std::int64_t tokens,
                         std::int64_t choices);

// The uniform draws of Gumbel noise -log(-log u), clamped to [1e-10, 1 - 1e-7] so that both logs
// stay finite: shape (batch, T, choices) with `options`. Keyed by `key` for `layer` when given
// (one sequence index per row, checked; `who` names the caller in the error), else from the
// default generator. On a GPU the keyed draws travel from pinned memory without blocking the host
// (a pageable copy would wait for the stream to drain, in every forward and recompute).
at::Tensor gumbel_uniform(const GumbelNoiseKey* key, std::int64_t layer, at::IntArrayRef shape,
                          const at::TensorOptions& options, const char* who);

}  // namespace shc
