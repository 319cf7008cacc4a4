#include "ssm_student.h"

#include <torch/torch.h>

#include "precision.h"
#include "unit_seed.h"

namespace shc {

// Embedding and untied head: N(0, 0.02) as in Mamba's (and GPT-2's) initialisation.
constexpr double kInitStd = 0.02;

int64_t SSMState::bytes() const {
  int64_t total = 0;
  for (const auto& l : layers) total += l.conv.nbytes() + l.ssm.nbytes();
  return total;
}

SSMStudentImpl::SSMStudentImpl(SSMConfig cfg, const UnitBuilt& on_unit_built)
    : cfg_(std::move(cfg)) {
  cfg_.validate();
  const uint64_t base = draw_base_seed();
  auto build = [&](int64_t unit, const std::function<void()>& make) {
    build_unit(base, unit, make);
    if (on_unit_built) on_unit_built(unit, unit_parameters(unit));
  };
  build(0, [&] {
    tok_embeddings =
        register_module("tok_embeddings", torch::nn::Embedding(cfg_.vocab_size, cfg_.hidden_dim));
    tok_embeddings->weight.normal_(0, kInitStd);
  });
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    build(1 + l, [&] {
      SSMBlock b(cfg_);
      blocks_.push_back(b);
      blocks->push_back(b);
    });
  }
  build(cfg_.n_layers + 1, [&] {
    final_norm = register_module("final_norm", RMSNorm(cfg_.hidden_dim, cfg_.norm_eps));
    if (!cfg_.tie_embeddings) {
      lm_head = register_module(
          "lm_head", torch::nn::Linear(
                         torch::nn::LinearOptions(cfg_.hidden_dim, cfg_.vocab_size).bias(false)));
      lm_head->weight.normal_(0, kInitStd);
    }
  });
}

std::vector<std::pair<std::string, torch::Tensor>> SSMStudentImpl::unit_parameters(
    int64_t u) const {
  TORCH_CHECK(u >= 0 && u < num_units(), "unit ", u, " out of range [0, ", num_units(), ")");
  UnitParameters out;
  if (u == 0) {
    append_parameters(out, "tok_embeddings.", *tok_embeddings);
  } else if (u <= cfg_.n_layers) {
    append_parameters(out, "blocks." + std::to_string(u - 1) + ".", *blocks_[u - 1]);
  } else {
    append_parameters(out, "final_norm.", *final_norm);
    if (lm_head) append_parameters(out, "lm_head.", *lm_head);
  }
  return out;
}

torch::Tensor SSMStudentImpl::run_unit(int64_t u, const torch::Tensor& input) {
  if (u == 0) return embed(input);
  if (u <= cfg_.n_layers) return run_block(u - 1, input);
  return head(input);
}

torch::Tensor SSMStudentImpl::embed(const torch::Tensor& ids) {
  return tok_embeddings(ids);
}

torch::Tensor SSMStudentImpl::run_block(int64_t i, const torch::Tensor& x, SSMLayerState* state) {
  return blocks_.at(i)->forward(x, state);
}

torch::Tensor SSMStudentImpl::lm_logits(const torch::Tensor& hidden) {
  const auto& w = lm_head ? lm_head->weight : tok_embeddings->weight;
  return at_least_fp32(torch::matmul(hidden, w.to(hidden.scalar_type()).t()));
}

torch::Tensor SSMStudentImpl::head(const torch::Tensor& x) {
  return lm_logits(at_least_fp32(final_norm(x)));
}

torch::Tensor SSMStudentImpl::final_hidden(const torch::Tensor& ids) {
  auto x = embed(ids);
  for (int64_t i = 0; i < cfg_.n_layers; ++i) x = run_block(i, x);
  return at_least_fp32(final_norm(x));
}

torch::Tensor SSMStudentImpl::forward(const torch::Tensor& ids) {
  return lm_logits(final_hidden(ids));
}

torch::Tensor SSMStudentImpl::forward(const torch::Tensor& ids, const torch::Tensor& labels) {
  TORCH_CHECK(labels.sizes() == ids.sizes(), "labels must have the shape of ids, got ",
              labels.sizes(), " vs ", ids.sizes());
  return next_token_loss(forward(ids), labels);
}

SSMState SSMStudentImpl::initial_state(int64_t batch) const {
  SSMState state;
  const auto options = tok_embeddings->weight.options().requires_grad(false);
  for (const auto& b : blocks_) state.layers.push_back(b->initial_state(batch, options));
  return state;
}

torch::Tensor SSMStudentImpl::forward_cached(const torch::Tensor& ids, SSMState& state) {
  TORCH_CHECK(state.layers.size() == blocks_.size(), "forward_cached: the state has ",
              state.layers.size(), " layers, the model ", blocks_.size());
  auto x = embed(ids);
  for (int64_t i = 0; i < cfg_.n_layers; ++i) x = run_block(i, x, &state.layers[i]);
  return head(x);
}

torch::Tensor SSMStudentImpl::step(const torch::Tensor& tokens, SSMState& state) {
  TORCH_CHECK(tokens.dim() == 1, "step: tokens must be (batch,), got ", tokens.sizes());
  TORCH_CHECK(state.layers.size() == blocks_.size(), "step: the state has ", state.layers.size(),
              " layers, the model ", blocks_.size());
  auto x = embed(tokens);  // (batch, d)
  for (int64_t i = 0; i < cfg_.n_layers; ++i) x = blocks_[i]->step(x, state.layers[i]);
  return head(x);
}

torch::Tensor SSMStudentImpl::generate(const torch::Tensor& ids, const GenerationOptions& options) {
  TORCH_CHECK(ids.dim() == 2, "generate: ids must be (batch, T >= 1)");
  EvalModeScope eval_mode(*this);
  auto state = initial_state(ids.size(0));
  return decode(
      {[&](const torch::Tensor& prompt) { return forward_cached(prompt, state).select(1, -1); },
       [&](const torch::Tensor& next) { return step(next, state); }},
      ids, options);
}

int64_t SSMStudentImpl::num_parameters() const {
  int64_t total = 0;
  for (const auto& p : parameters()) total += p.numel();
  return total;
}

}  // namespace shc
