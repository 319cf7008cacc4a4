// Model configuration and the named presets (SPEC §4.2 get_config). Torch-free on purpose: the
// CLI and tools read and validate configs without pulling in LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shc {

// How the hyper-connection matrices H_pre, H_post, H_res are produced (SPEC §4.1).
enum class ResidualKind {
  kResidual,  // n = 1, H = 1: the plain pre-norm residual baseline
  kHC,        // dynamic hyper-connections, Zhu et al. 2024
  kMHC,       // Sinkhorn-Knopp projected mixing, DeepSeek mHC 2025
  kSHC,       // sparse mixture of Cayley-orthogonal matrices (this project)
  kHistory,   // a window of the last n_streams states mixed by simplex weights (seed 004)
};

std::string to_string(ResidualKind kind);
// Throws std::invalid_argument naming the accepted spellings.
ResidualKind parse_residual_kind(const std::string& name);

struct ModelConfig {
  std::string name = "custom";

  // Transformer shape.
  int64_t vocab_size = 32000;
  int64_t hidden_dim = 1024;
  int64_t n_layers = 24;
  int64_t n_heads = 16;
  int64_t n_kv_heads = 0;  // 0 means n_heads (no grouped-query attention)
  int64_t ffn_dim = 4096;
  int64_t max_seq_len = 2048;
  double rope_base = 10000.0;
  double norm_eps = 1e-6;
  bool tie_embeddings = true;

  // Hyper-connections.
  ResidualKind residual = ResidualKind::kSHC;
  int64_t n_streams = 4;             // n
  int64_t k_mixture = 2;             // K orthogonal bases per sublayer (shc)
  int64_t top_k = 2;                 // bases kept per token (shc); top_k < K is sparse
  int64_t sinkhorn_iters = 20;       // mhc
  double routing_init_scale = 0.01;  // Cayley init std and dynamic-projection scale s
  bool stream_offsets = false;       // learned per-stream offset added to S0[i] = e
  int64_t stream_rank = 0;           // r < n carries the state between blocks as U^T S
  bool adaptive_rank = false;        // per-token n_eff (shc only)
  int64_t rank_hidden = 16;          // width of the rank selector's MLP
  double rank_tau_start = 1.0;       // Gumbel-softmax temperature, annealed ...
  double rank_tau_min = 0.1;         // ... down to this
  // history (core/routing/history_router.h): the window is n_streams states.
  double history_floor = 0.0;   // identity floor: weight of the latest state >= this, in [0, 1)
  double history_tau = 0.0;     // Gumbel-softmax temperature of the weights in training; 0 = off
  bool history_detach = false;  // gradient only through the latest state, not the older ones

  // Streams the residual state carries: 1 for the plain residual, n otherwise.
  int64_t streams() const { return residual == ResidualKind::kResidual ? 1 : n_streams; }
  int64_t kv_heads() const { return n_kv_heads == 0 ? n_heads : n_kv_heads; }
  int64_t head_dim() const { return hidden_dim / n_heads; }
  // True when blocks exchange the compressed r x d state instead of the full n x d one.
  bool compressed_streams() const {
    return residual != ResidualKind::kResidual && stream_rank > 0 && stream_rank < n_streams;
  }

  // Throws std::invalid_argument with a message naming the offending fields.
  void validate() const;
  // One line, e.g. "tiny: shc n=4 K=2 top_k=2 d=128 L=4 heads=4 ffn=384 vocab=257".
  std::string summary() const;
};

// Presets: tiny, small (CPU-sized), 500m, 1b, 3b, 7b (the seeds' shapes, vocab 32000).
// Throws std::invalid_argument for an unknown name, listing the known ones.
ModelConfig get_config(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace shc
