// Configuration of the SSM student (SPEC §4.4): a Mamba language model (Gu & Dao 2023, "Mamba:
// Linear-Time Sequence Modeling with Selective State Spaces"). Torch-free like ModelConfig, so the
// CLI and checkpoints read and validate it without LibTorch.
#pragma once

#include <cstdint>
#include <string>

#include "config.h"

namespace shc {

struct SSMConfig {
  std::string name = "ssm";

  int64_t vocab_size = 32000;
  int64_t hidden_dim = 1024;  // d (d_model)
  int64_t n_layers = 24;
  int64_t state_dim = 16;   // N: state size per inner channel
  int64_t conv_kernel = 4;  // width of the causal depthwise convolution
  int64_t expand = 2;       // d_inner = expand * d
  int64_t dt_rank = 0;      // rank of the input-dependent step size; 0 means ceil(d / 16)
  double dt_min = 1e-3;     // softplus(dt bias) starts log-uniform in [dt_min, dt_max]
  double dt_max = 0.1;
  double norm_eps = 1e-6;
  bool tie_embeddings = true;

  int64_t d_inner() const { return expand * hidden_dim; }
  int64_t resolved_dt_rank() const { return dt_rank > 0 ? dt_rank : (hidden_dim + 15) / 16; }

  // Throws std::invalid_argument with a message naming the offending fields.
  void validate() const;
  // One line, e.g. "tiny-ssm: mamba d=128 L=4 N=16 expand=2 conv=4 dt_rank=8 vocab=257".
  std::string summary() const;

  // The student of a teacher: the same vocabulary (the KL compares distributions over the same
  // tokens), hidden size (a hidden-state loss compares like with like), norm eps and embedding
  // tying, and the same depth. A Mamba block has about 3 * expand * d^2 = 6 d^2 parameters
  // against a transformer block's 4 d^2 (attention) + 3 d * ffn_dim (SwiGLU), so at equal depth
  // the student is the smaller, cheaper model (about half the block parameters at ffn_dim = 8d/3),
  // and layer l of the student can be matched with layer l of the teacher.
  static SSMConfig from_teacher_config(const ModelConfig& teacher);
};

}  // namespace shc
