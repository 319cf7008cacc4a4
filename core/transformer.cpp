#include "transformer.h"

#include <torch/torch.h>

#include "inject.h"
#include "precision.h"
#include "unit_seed.h"

#include <cmath>
#include <limits>

namespace shc {

SHCTransformerImpl::SHCTransformerImpl(ModelConfig cfg, const UnitBuilt& on_unit_built)
    : cfg_(std::move(cfg)) {
  cfg_.validate();
  const uint64_t base = draw_base_seed();
  auto build = [&](int64_t unit, const std::function<void()>& make) {
    build_unit(base, unit, make);
    if (on_unit_built) on_unit_built(unit, unit_parameters(unit));
  };
  build(0, [&] { build_embedding(); });
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t l = 0; l < cfg_.n_layers; ++l) build(1 + l, [&] { build_block(l); });
  build(cfg_.n_layers + 1, [&] { build_head(); });
}

// GPT-2 style initialisation: N(0, 0.02), output projections of each sublayer scaled by
// 1/sqrt(2L) so the residual stream's variance does not grow with depth.
constexpr double kInitStd = 0.02;

void SHCTransformerImpl::build_embedding() {
  const int64_t n = cfg_.streams(), d = cfg_.hidden_dim;
  tok_embeddings = register_module("tok_embeddings", torch::nn::Embedding(cfg_.vocab_size, d));
  tok_embeddings->weight.normal_(0, kInitStd);
  if (cfg_.residual != ResidualKind::kResidual && cfg_.stream_offsets) {
    // Small random offsets break the symmetry of the copied streams from the first step.
    stream_offsets = register_parameter("stream_offsets", torch::randn({n, d}) * 0.02);
  }
}

void SHCTransformerImpl::build_block(int64_t layer) {
  const double out_std = kInitStd / std::sqrt(2.0 * cfg_.n_layers);
  SHCBlock b(cfg_, layer);
  b->attn->q_proj->weight.normal_(0, kInitStd);
  b->attn->kv_proj->weight.normal_(0, kInitStd);
  b->attn->o_proj->weight.normal_(0, out_std);
  b->ffn->gate_up->weight.normal_(0, kInitStd);
  b->ffn->down->weight.normal_(0, out_std);
  blocks_.push_back(b);
  blocks->push_back(b);
}

void SHCTransformerImpl::build_head() {
  const int64_t n = cfg_.streams(), d = cfg_.hidden_dim;
  // history ends on its latest state (stream 0); the other kinds learn the reduction.
  if (cfg_.residual != ResidualKind::kResidual && cfg_.residual != ResidualKind::kHistory) {
    stream_reducer = register_module("stream_reducer", FactorizedKVCache(n, d, 1));
    if (cfg_.compressed_streams()) {
      stream_codec = register_module("stream_codec", FactorizedKVCache(n, d, cfg_.stream_rank));
    }
  }
  final_norm = register_module("final_norm", RMSNorm(d, cfg_.norm_eps));
  if (!cfg_.tie_embeddings) {
    lm_head = register_module(
        "lm_head", torch::nn::Linear(torch::nn::LinearOptions(d, cfg_.vocab_size).bias(false)));
    lm_head->weight.normal_(0, kInitStd);
  }
}

std::vector<std::pair<std::string, torch::Tensor>> SHCTransformerImpl::unit_parameters(
    int64_t u) const {
  TORCH_CHECK(u >= 0 && u < num_units(), "unit ", u, " out of range [0, ", num_units(), ")");
  UnitParameters out;
  if (u == 0) {
    append_parameters(out, "tok_embeddings.", *tok_embeddings);
    if (stream_offsets.defined()) out.emplace_back("stream_offsets", stream_offsets);
  } else if (u <= cfg_.n_layers) {
    append_parameters(out, "blocks." + std::to_string(u - 1) + ".", *blocks_[u - 1]);
  } else {
    if (stream_reducer) append_parameters(out, "stream_reducer.", *stream_reducer);
    if (stream_codec) append_parameters(out, "stream_codec.", *stream_codec);
    append_parameters(out, "final_norm.", *final_norm);
    if (lm_head) append_parameters(out, "lm_head.", *lm_head);
  }
  return out;
}

torch::Tensor SHCTransformerImpl::run_unit(int64_t u, const torch::Tensor& input) {
  if (u == 0) return embed(input);
  if (u <= cfg_.n_layers) return run_block(u - 1, input);
  return head(input);
}

torch::Tensor SHCTransformerImpl::embed(const torch::Tensor& ids) {
  check_sequence_length(ids, 0);
  auto e = tok_embeddings(ids).unsqueeze(-2);  // (batch, T, 1, d)
  if (cfg_.residual == ResidualKind::kResidual) return e;
  if (stream_codec) {
    // C0 = U^T S0 with S0[i] = e (+ offset_i): (U^T 1) e (+ U^T offsets), never n x d per token.
    FullPrecisionScope full_precision;
    auto u = stream_codec->basis().to(e.scalar_type());
    auto c = u.sum(0).unsqueeze(-1) * e;
    return stream_offsets.defined() ? c + torch::matmul(u.t(), stream_offsets.to(c.dtype())) : c;
  }
  auto s = e.expand({-1, -1, cfg_.n_streams, -1});
  return stream_offsets.defined() ? s + stream_offsets.to(s.scalar_type()) : s.contiguous();
}

torch::Tensor SHCTransformerImpl::run_block(int64_t i, const torch::Tensor& streams,
                                            LayerKVCache* cache) {
  // shc::inject (inject.h) may have put a wrapper in the block's slot of `blocks`.
  if (auto* injected = blocks[i]->as<InjectedModuleImpl>()) {
    return injected->forward(streams, cache);
  }
  if (!stream_codec) return blocks_.at(i)->forward(streams, cache);
  // With stream_rank r < n the state crosses block boundaries as C = U^T S (r x d per token).
  auto u = stream_codec->basis();
  return blocks_.at(i)->forward(StreamState(streams, u), cache, u);
}

namespace {

// h = sum_j v[j] X[j] per token: the read of the fused hyper-connection with the same coefficients
// v (k) for every token, one pass over the state (a batched matmul would first copy X transposed).
torch::Tensor reduce_streams(const torch::Tensor& streams, const torch::Tensor& v, StreamOps ops) {
  auto shape = streams.sizes().vec();
  shape.pop_back();
  return stream_read(streams, v.to(streams.scalar_type()).expand(shape), ops);
}

}  // namespace

torch::Tensor SHCTransformerImpl::final_hidden(const torch::Tensor& streams) {
  torch::Tensor x;
  if (stream_reducer) {
    // The reducer's basis V (n, 1): h = V^T S, or V^T (U C) = (V^T U) C with compression.
    FullPrecisionScope full_precision;
    auto v = stream_reducer->basis().squeeze(-1);
    if (stream_codec) v = torch::matmul(v, stream_codec->basis());
    x = reduce_streams(streams, v, stream_ops_);
  } else {
    // The plain residual carries one stream; history has no reducer and reads its latest state.
    x = first_stream(streams);
  }
  return final_norm(x);
}

torch::Tensor SHCTransformerImpl::head(const torch::Tensor& streams) {
  auto h = final_hidden(streams);
  const auto& w = lm_head ? lm_head->weight : tok_embeddings->weight;
  return at_least_fp32(torch::matmul(h, w.to(h.scalar_type()).t()));
}

torch::Tensor SHCTransformerImpl::forward(const torch::Tensor& ids) {
  auto s = embed(ids);
  for (int64_t i = 0; i < cfg_.n_layers; ++i) s = run_block(i, s);
  return head(s);
}

torch::Tensor SHCTransformerImpl::forward(const torch::Tensor& ids, const torch::Tensor& labels) {
  TORCH_CHECK(labels.sizes() == ids.sizes(), "labels must have the shape of ids, got ",
              labels.sizes(), " vs ", ids.sizes());
  return next_token_loss(forward(ids), labels);
}

void SHCTransformerImpl::check_sequence_length(const torch::Tensor& ids, int64_t offset) const {
  TORCH_CHECK(ids.dim() == 2, "SHCTransformer: ids must be (batch, T), got ", ids.sizes());
  TORCH_CHECK(offset + ids.size(1) <= cfg_.max_seq_len, "SHCTransformer: sequence length ",
              offset + ids.size(1), " exceeds max_seq_len (", cfg_.max_seq_len, ")");
}

bool is_decayed_parameter(const std::string& name, const torch::Tensor& parameter) {
  static const std::string kSuffix = "weight";
  return parameter.dim() >= 2 && name.size() >= kSuffix.size() &&
         name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0;
}

torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  TORCH_CHECK(labels.dim() == 2 && logits.dim() == 3 && logits.size(1) == labels.size(1),
              "next_token_loss: expected logits (batch, T, vocab) and labels (batch, T), got ",
              logits.sizes(), " and ", labels.sizes());
  const int64_t t = labels.size(1), vocab = logits.size(-1);
  TORCH_CHECK(t >= 2, "next_token_loss: a sequence of length ", t,
              " has no next token to predict (the loss needs T >= 2 tokens per row)");
  auto pred = logits.narrow(1, 0, t - 1).reshape({-1, vocab});
  auto target = labels.narrow(1, 1, t - 1).reshape({-1});
  return torch::nn::functional::cross_entropy(
      pred, target, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex));
}

torch::Tensor SHCTransformerImpl::forward_cached(const torch::Tensor& ids, KVCache& cache) {
  check_sequence_length(ids, cache.length());
  auto s = embed(ids);
  for (int64_t i = 0; i < cfg_.n_layers; ++i) s = run_block(i, s, &cache.layers[i]);
  return head(s);
}

torch::Tensor SHCTransformerImpl::generate(const torch::Tensor& ids,
                                           const GenerationOptions& options) {
  TORCH_CHECK(ids.dim() == 2 && ids.size(1) >= 1, "generate: ids must be (batch, T >= 1)");
  const int64_t total = ids.size(1) + options.max_new_tokens;
  TORCH_CHECK(total <= cfg_.max_seq_len, "generate: prompt (", ids.size(1), ") + max_new_tokens (",
              options.max_new_tokens, ") exceeds max_seq_len (", cfg_.max_seq_len, ")");
  EvalModeScope eval_mode(*this);
  KVCache cache(cfg_, ids.size(0), total, tok_embeddings->weight.options());
  return decode(
      {[&](const torch::Tensor& prompt) { return forward_cached(prompt, cache).select(1, -1); },
       [&](const torch::Tensor& tokens) {
         return forward_cached(tokens.unsqueeze(1), cache).select(1, -1);
       }},
      ids, options);
}

void SHCTransformerImpl::set_routing_observer(RoutingObserver* observer) {
  for (auto& b : blocks_) b->set_observer(observer);
}

void SHCTransformerImpl::set_fused_routing(bool fused) {
  stream_ops_ = fused ? StreamOps::kFused : StreamOps::kComposed;
  for (auto& b : blocks_) b->set_fused_routing(fused);
}

void SHCTransformerImpl::set_rank_temperature(double tau) {
  for (auto& b : blocks_) {
    if (b->rank_selector) b->rank_selector->set_temperature(tau);
  }
}

void SHCTransformerImpl::set_gumbel_noise(std::optional<GumbelNoiseKey> key) {
  gumbel_key_ = std::move(key);
  for (auto& b : blocks_) {
    if (b->rank_selector) {
      b->rank_selector->set_noise_key(gumbel_key_ ? &*gumbel_key_ : nullptr, b->layer());
    }
    for (const auto& hc : {b->attn_hc, b->ffn_hc}) {
      if (const auto& router = hc->router())
        router->set_noise_key(gumbel_key_ ? &*gumbel_key_ : nullptr);
    }
  }
}

int64_t SHCTransformerImpl::num_parameters() const {
  int64_t total = 0;
  for (const auto& p : parameters()) total += p.numel();
  return total;
}

std::map<std::string, int64_t> SHCTransformerImpl::parameter_breakdown() const {
  std::map<std::string, int64_t> counts{{"embedding", 0}, {"attention", 0}, {"ffn", 0},
                                        {"norms", 0},     {"routing", 0},   {"head", 0}};
  auto category = [](const std::string& name) -> std::string {
    auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
    if (has("_hc.") || has("rank_selector") || has("stream_")) return "routing";
    if (has("_norm")) return "norms";
    if (has(".attn.")) return "attention";
    if (has(".ffn.")) return "ffn";
    if (has("tok_embeddings")) return "embedding";
    return "head";
  };
  for (const auto& item : named_parameters()) counts[category(item.key())] += item.value().numel();
  return counts;
}

}  // namespace shc
