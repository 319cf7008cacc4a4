// The small model the tests build: big enough to exercise every path (GQA-capable heads, several
// Cayley bases with sparse top-k), small enough to train a few steps in milliseconds.
#pragma once

#include "core/config.h"

namespace shc::test {

inline ModelConfig small_model_config(ResidualKind kind = ResidualKind::kSHC) {
  ModelConfig c;
  c.name = "test";
  c.vocab_size = 61;
  c.hidden_dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.ffn_dim = 48;
  c.max_seq_len = 32;
  c.residual = kind;
  c.n_streams = 4;
  c.k_mixture = 3;
  c.top_k = 2;
  c.sinkhorn_iters = 20;
  return c;
}

}  // namespace shc::test
