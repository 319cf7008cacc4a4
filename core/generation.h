// Autoregressive decoding shared by every model that generates (SHCTransformer with its KV
// cache, a recurrent student with its fixed-size state): the sampling options, the choice of the
// next token, and the loop over steps with per-row EOS handling and streaming.
#pragma once

#include <ATen/core/Generator.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <optional>

namespace shc {

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  double temperature = 1.0;  // 0 (or do_sample = false) is greedy decoding
  int64_t top_k = 0;         // keep the k most likely tokens; 0 = off
  double top_p = 1.0;        // nucleus sampling mass; 1 = off
  bool do_sample = true;
  int64_t eos_id = -1;           // a row stops (and is padded with eos) once it emits it; -1 = none
  std::optional<uint64_t> seed;  // sampling RNG seed; unset = the global torch generator
  // Called after each decoding step with the tokens just chosen, (batch,) (e.g. to stream them).
  std::function<void(const torch::Tensor& tokens)> on_token;
  // Asked after each step (after on_token): true ends generation there (e.g. a stop string).
  std::function<bool()> stop;
};

// The next token per row from last-position logits (batch, vocab): argmax when temperature is 0
// or do_sample is false, else a draw from softmax(logits / temperature) restricted to the top_k
// most likely tokens and to the smallest set of most likely tokens whose mass reaches top_p (the
// most likely token always stays). Draws from `generator` when given, else the global one.
torch::Tensor sample_next_token(const torch::Tensor& logits, const GenerationOptions& options,
                                std::optional<at::Generator>& generator);

// How a model decodes incrementally: `start` consumes the prompt ids (batch, T) and returns the
// last position's logits (batch, vocab); `next` consumes one token per row (batch,) and returns
// the logits after it.
struct IncrementalDecoder {
  std::function<torch::Tensor(const torch::Tensor& ids)> start;
  std::function<torch::Tensor(const torch::Tensor& tokens)> next;
};

// Evaluation mode for a scope (a model generating); the previous mode comes back on exit, errors
// included.
class EvalModeScope {
 public:
  explicit EvalModeScope(torch::nn::Module& model)
      : model_(model), was_training_(model.is_training()) {
    model_.eval();
  }
  ~EvalModeScope() { model_.train(was_training_); }
  EvalModeScope(const EvalModeScope&) = delete;
  EvalModeScope& operator=(const EvalModeScope&) = delete;

 private:
  torch::nn::Module& model_;
  bool was_training_;
};

// Up to max_new_tokens steps after `ids` (batch, T >= 1), under no_grad; returns (batch, T +
// generated). Checks the options (temperature >= 0, top_p in (0, 1]).
torch::Tensor decode(const IncrementalDecoder& decoder, const torch::Tensor& ids,
                     const GenerationOptions& options);

}  // namespace shc
