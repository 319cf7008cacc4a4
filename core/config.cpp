#include "config.h"

#include <sstream>
#include <stdexcept>

namespace shc {

std::string to_string(ResidualKind kind) {
  switch (kind) {
    case ResidualKind::kResidual:
      return "residual";
    case ResidualKind::kHC:
      return "hc";
    case ResidualKind::kMHC:
      return "mhc";
    case ResidualKind::kSHC:
      return "shc";
    case ResidualKind::kHistory:
      return "history";
  }
  return "?";
}

ResidualKind parse_residual_kind(const std::string& name) {
  for (auto kind : {ResidualKind::kResidual, ResidualKind::kHC, ResidualKind::kMHC,
                    ResidualKind::kSHC, ResidualKind::kHistory}) {
    if (to_string(kind) == name) return kind;
  }
  throw std::invalid_argument("unknown residual kind '" + name +
                              "'; choose one of: residual, hc, mhc, shc, history");
}

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument("invalid model config: " + message);
}

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

void ModelConfig::validate() const {
  require(vocab_size >= 2, "vocab_size (" + num(vocab_size) + ") must be at least 2");
  require(hidden_dim >= 1, "hidden_dim (" + num(hidden_dim) + ") must be positive");
  require(n_layers >= 1, "n_layers (" + num(n_layers) + ") must be positive");
  require(n_heads >= 1, "n_heads (" + num(n_heads) + ") must be positive");
  require(hidden_dim % n_heads == 0, "hidden_dim (" + num(hidden_dim) +
                                         ") must be divisible by n_heads (" + num(n_heads) + ")");
  require(head_dim() % 2 == 0, "head_dim = hidden_dim / n_heads (" + num(head_dim()) +
                                   ") must be even for rotary embeddings");
  require(
      n_kv_heads >= 0 && kv_heads() <= n_heads && n_heads % kv_heads() == 0,
      "n_heads (" + num(n_heads) + ") must be a multiple of n_kv_heads (" + num(kv_heads()) + ")");
  require(ffn_dim >= 1, "ffn_dim (" + num(ffn_dim) + ") must be positive");
  require(max_seq_len >= 1, "max_seq_len (" + num(max_seq_len) + ") must be positive");
  require(rope_base > 0, "rope_base must be positive");
  require(norm_eps > 0, "norm_eps must be positive");
  if (residual == ResidualKind::kResidual) {
    require(!adaptive_rank, "adaptive_rank needs residual = shc (the plain residual has 1 stream)");
    return;
  }
  require(n_streams >= 1 && n_streams <= 64,
          "n_streams (" + num(n_streams) + ") must be between 1 and 64");
  require(stream_rank >= 0 && stream_rank <= n_streams,
          "stream_rank (" + num(stream_rank) + ") must be between 0 (off) and n_streams (" +
              num(n_streams) + ")");
  require(routing_init_scale >= 0, "routing_init_scale must be non-negative");
  if (residual == ResidualKind::kSHC) {
    require(k_mixture >= 1, "k_mixture (" + num(k_mixture) + ") must be positive");
    require(top_k >= 1 && top_k <= k_mixture,
            "top_k (" + num(top_k) + ") must be between 1 and k_mixture (" + num(k_mixture) + ")");
  }
  if (residual == ResidualKind::kMHC) {
    require(sinkhorn_iters >= 1, "sinkhorn_iters (" + num(sinkhorn_iters) + ") must be positive");
  }
  if (residual == ResidualKind::kHistory) {
    require(history_floor >= 0 && history_floor < 1,
            "history_floor (" + num(history_floor) + ") must be in [0, 1)");
    require(history_tau >= 0, "history_tau (" + num(history_tau) + ") must be >= 0 (0 = off)");
    require(!compressed_streams(),
            "stream_rank applies to hc, mhc and shc (history's window is a shift register)");
  }
  require(!adaptive_rank || residual == ResidualKind::kSHC, "adaptive_rank needs residual = shc");
  if (adaptive_rank) {
    require(rank_hidden >= 1, "rank_hidden must be positive");
    require(rank_tau_min > 0 && rank_tau_start >= rank_tau_min,
            "rank temperatures need 0 < rank_tau_min <= rank_tau_start");
  }
}

std::string ModelConfig::summary() const {
  std::ostringstream s;
  s << name << ": " << to_string(residual);
  if (residual != ResidualKind::kResidual) s << " n=" << n_streams;
  if (residual == ResidualKind::kSHC) s << " K=" << k_mixture << " top_k=" << top_k;
  if (residual == ResidualKind::kMHC) s << " sinkhorn_iters=" << sinkhorn_iters;
  if (residual == ResidualKind::kHistory) {
    if (history_floor > 0) s << " history_floor=" << history_floor;
    if (history_tau > 0) s << " history_tau=" << history_tau;
    if (history_detach) s << " history_detach";
  }
  if (adaptive_rank) s << " adaptive_rank";
  if (compressed_streams()) s << " stream_rank=" << stream_rank;
  s << " d=" << hidden_dim << " L=" << n_layers << " heads=" << n_heads;
  if (kv_heads() != n_heads) s << " kv_heads=" << kv_heads();
  s << " ffn=" << ffn_dim << " vocab=" << vocab_size << " seq=" << max_seq_len;
  return s.str();
}

namespace {

ModelConfig shape(const std::string& name, int64_t vocab, int64_t d, int64_t layers, int64_t heads,
                  int64_t ffn, int64_t seq) {
  ModelConfig c;
  c.name = name;
  c.vocab_size = vocab;
  c.hidden_dim = d;
  c.n_layers = layers;
  c.n_heads = heads;
  c.ffn_dim = ffn;
  c.max_seq_len = seq;
  return c;
}

// CPU presets use the byte-level vocabulary: 256 byte values plus one end-of-text id.
constexpr int64_t kByteVocab = 257;

}  // namespace

std::vector<std::string> preset_names() {
  return {"tiny", "small", "500m", "1b", "3b", "7b"};
}

ModelConfig get_config(const std::string& name) {
  if (name == "tiny") return shape(name, kByteVocab, 128, 4, 4, 384, 256);
  if (name == "small") return shape(name, kByteVocab, 512, 8, 8, 1408, 1024);
  if (name == "500m") return shape(name, 32000, 1024, 24, 16, 4096, 2048);
  if (name == "1b") return shape(name, 32000, 2048, 24, 16, 8192, 2048);
  if (name == "3b") return shape(name, 32000, 2560, 32, 32, 10240, 4096);
  if (name == "7b") return shape(name, 32000, 4096, 32, 32, 11008, 4096);
  std::string known;
  for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown model preset '" + name + "'; choose one of: " + known);
}

}  // namespace shc
