// SSMStudent: the selective state-space language model that a trained SHC teacher is distilled
// into (SPEC §4.4): token embedding -> n_layers x SSMBlock (Mamba, Gu & Dao 2023) -> RMSNorm ->
// LM head (tied with the embedding by default). Training runs the parallel selective scan over
// the whole sequence (selective_scan.h); generation runs the recurrence one token at a time on a
// state whose size does not depend on the position: no KV cache, O(1) time and memory per token.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rms_norm.h"
#include "ssm_block.h"
#include "ssm_config.h"
#include "transformer.h"

namespace shc {

// The recurrent state of the whole student: one SSMLayerState per block, (batch, d_inner,
// conv_kernel - 1) + (batch, d_inner, N) each, whatever the number of tokens consumed.
struct SSMState {
  std::vector<SSMLayerState> layers;
  int64_t bytes() const;
};

class SSMStudentImpl : public torch::nn::Module {
 public:
  // Built and initialised in units like SHCTransformer (transformer.h): 0 = embedding, 1 + i =
  // block i, n_layers + 1 = head (final norm, and the LM head when untied). Unit u draws from
  // the global CPU generator seeded with (a base seed drawn once, u), and `on_unit_built(u,
  // unit_parameters(u))` runs once unit u is complete: a unit-by-unit build equals an
  // uninterrupted one after the same torch::manual_seed.
  using UnitBuilt = SHCTransformerImpl::UnitBuilt;
  explicit SSMStudentImpl(SSMConfig cfg, const UnitBuilt& on_unit_built = {});

  // ids (batch, T) int64 -> logits (batch, T, vocab), fp32 (fp64 for an fp64 model).
  torch::Tensor forward(const torch::Tensor& ids);
  // Mean next-token cross entropy (next_token_loss): position t predicts labels[t + 1].
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& labels);
  // ids (batch, T) -> (batch, T, d) after the final norm, at least fp32: what the LM head reads.
  torch::Tensor final_hidden(const torch::Tensor& ids);
  // The LM head on final_hidden's output: (batch, T, d) -> logits (batch, T, vocab).
  torch::Tensor lm_logits(const torch::Tensor& hidden);

  // A zero state (nothing consumed yet) for `batch` rows, in the model's dtype and device.
  SSMState initial_state(int64_t batch) const;
  // The parallel forward continuing from `state` (the tokens it has consumed), advancing it past
  // ids: ids (batch, T) -> logits (batch, T, vocab). generate prefills the prompt with it.
  torch::Tensor forward_cached(const torch::Tensor& ids, SSMState& state);
  // One token per row, tokens (batch,) -> logits (batch, vocab) of the next token, advancing
  // `state` by the recurrence: O(1) time and memory per token.
  torch::Tensor step(const torch::Tensor& tokens, SSMState& state);
  // The prompt is consumed by one parallel forward_cached, then each new token by `step`; the
  // options are the transformer's (generation.h decode). There is no length limit: the state is
  // fixed. Returns (batch, T + generated) ids.
  torch::Tensor generate(const torch::Tensor& ids, const GenerationOptions& options = {});

  // The units a sharded runtime executes one at a time: embed -> block(i) -> head.
  torch::Tensor embed(const torch::Tensor& ids);  // (batch, T, d)
  torch::Tensor run_block(int64_t i, const torch::Tensor& x, SSMLayerState* state = nullptr);
  torch::Tensor head(const torch::Tensor& x);  // (batch, T, d) -> logits (batch, T, vocab)

  int64_t num_units() const { return cfg_.n_layers + 2; }
  // The parameters unit u owns, named as in named_parameters(). A tied LM head is the
  // embedding's (the head unit then owns only final_norm.weight).
  std::vector<std::pair<std::string, torch::Tensor>> unit_parameters(int64_t u) const;
  // Unit u on the previous unit's output: embed(ids), run_block(u - 1, x) or head(x).
  torch::Tensor run_unit(int64_t u, const torch::Tensor& input);

  const SSMConfig& config() const { return cfg_; }
  const std::vector<SSMBlock>& block_list() const { return blocks_; }
  int64_t num_parameters() const;

  torch::nn::Embedding tok_embeddings{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  RMSNorm final_norm{nullptr};
  torch::nn::Linear lm_head{nullptr};  // only when embeddings are not tied

 private:
  SSMConfig cfg_;
  std::vector<SSMBlock> blocks_;
};
TORCH_MODULE(SSMStudent);

}  // namespace shc
