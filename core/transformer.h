// SHCTransformer: token embedding (tied with the LM head by default) -> S0[i] = e (+ offset_i) ->
// N x SHCBlock -> stream reduction (FactorizedKVCache, r = 1) -> RMSNorm -> LM head (SPEC §4.2).
// The streams persist across all blocks, so the composite residual map prod_l H_res(l) has
// spectral norm <= 1 for shc and mhc.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "attention.h"
#include "block.h"
#include "config.h"
#include "factorized_cache.h"
#include "generation.h"
#include "rms_norm.h"

namespace shc {

// AdamW's decoupled weight decay applies to matrices only: parameters named "*weight" with two
// or more dimensions (linear and embedding weights, routing projections), not norm gains,
// biases, scales, Cayley generators or stream offsets.
bool is_decayed_parameter(const std::string& name, const torch::Tensor& parameter);

// Label value that contributes nothing to the loss.
constexpr int64_t kIgnoreIndex = -100;

// Mean next-token cross entropy of logits (batch, T, vocab) against labels (batch, T): position t
// predicts labels[t + 1]; kIgnoreIndex labels are skipped.
torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& labels);

class SHCTransformerImpl : public torch::nn::Module {
 public:
  // The model is built and initialised in units: 0 = embedding (token embedding, stream
  // offsets), 1 + i = block i, n_layers + 1 = head (stream reduction and codec, final norm, the
  // LM head when untied). Unit u draws its initial values from a generator seeded with (a base
  // seed drawn once from the global CPU generator, u), so a sharded runtime can build the model
  // unit by unit and keep a shard of each: `on_unit_built(u, unit_parameters(u))` runs once unit
  // u is complete, and the values equal those of an uninterrupted construction after the same
  // torch::manual_seed.
  using UnitBuilt = std::function<void(
      int64_t unit, const std::vector<std::pair<std::string, torch::Tensor>>& parameters)>;
  explicit SHCTransformerImpl(ModelConfig cfg, const UnitBuilt& on_unit_built = {});

  // ids (batch, T) int64 -> logits (batch, T, vocab), fp32 (fp64 for an fp64 model).
  torch::Tensor forward(const torch::Tensor& ids);
  // Mean next-token cross entropy: position t predicts labels[t + 1] (the shift happens here,
  // once); labels equal to kIgnoreIndex are skipped. labels has the shape of ids.
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& labels);
  // Incremental forward: appends ids' keys/values to `cache` (positions continue from it).
  torch::Tensor forward_cached(const torch::Tensor& ids, KVCache& cache);
  // KV-cached decoding; returns (batch, T + generated) ids.
  torch::Tensor generate(const torch::Tensor& ids, const GenerationOptions& options = {});

  // The units a sharded runtime executes one at a time: embed -> block(i) -> head. They exchange
  // the residual state: S (batch, T, n, d), or with stream_rank r < n its coordinates
  // C = U^T S (batch, T, r, d) in the stream codec's basis U.
  torch::Tensor embed(const torch::Tensor& ids);
  torch::Tensor run_block(int64_t i, const torch::Tensor& streams, LayerKVCache* cache = nullptr);
  torch::Tensor head(const torch::Tensor& streams);  // logits (batch, T, vocab), at least fp32
  torch::Tensor final_hidden(const torch::Tensor& streams);  // (batch, T, d) after the final norm

  int64_t num_units() const { return cfg_.n_layers + 2; }
  // The parameters unit u owns, named as in named_parameters(). A tied LM head is the embedding's.
  std::vector<std::pair<std::string, torch::Tensor>> unit_parameters(int64_t u) const;
  // Unit u on the previous unit's output: embed(ids), run_block(u - 1, streams) or head(streams).
  torch::Tensor run_unit(int64_t u, const torch::Tensor& input);

  const ModelConfig& config() const { return cfg_; }
  const std::vector<SHCBlock>& block_list() const { return blocks_; }
  void set_routing_observer(RoutingObserver* observer);
  // Fused CPU kernels in every hyper-connection (default) or the composed reference ops.
  void set_fused_routing(bool fused);
  // Gumbel-softmax temperature of every rank selector (the trainer anneals it).
  void set_rank_temperature(double tau);
  // Keys the Gumbel noise of the rank selectors and history routers for the next forwards
  // (gumbel_noise.h): the trainer sets (seed, step, global sequence index of each row) before
  // each micro-batch; nullopt goes back to the default generator.
  void set_gumbel_noise(std::optional<GumbelNoiseKey> key);

  int64_t num_parameters() const;
  // Parameter counts by component: embedding, attention, ffn, norms, routing, head.
  std::map<std::string, int64_t> parameter_breakdown() const;

  torch::nn::Embedding tok_embeddings{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  FactorizedKVCache stream_reducer{nullptr};  // n -> 1 after the last block (not for residual,
                                              // nor history, which reads its latest state)
  FactorizedKVCache stream_codec{nullptr};    // n <-> r between units (stream_rank < n)
  RMSNorm final_norm{nullptr};
  torch::nn::Linear lm_head{nullptr};  // only when embeddings are not tied
  torch::Tensor stream_offsets;        // (n, d) only with cfg.stream_offsets

 private:
  // ids (batch, T) with offset + T <= max_seq_len (offset: positions already in a KV cache), else
  // an error: every path into the model (forward, forward_cached, run_unit) embeds first.
  void check_sequence_length(const torch::Tensor& ids, int64_t offset) const;
  void build_embedding();
  void build_block(int64_t layer);
  void build_head();

  ModelConfig cfg_;
  StreamOps stream_ops_ = StreamOps::kFused;  // set_fused_routing, for the final stream reduction
  std::vector<SHCBlock> blocks_;
  std::optional<GumbelNoiseKey> gumbel_key_;  // the selectors point here
};
TORCH_MODULE(SHCTransformer);

}  // namespace shc
