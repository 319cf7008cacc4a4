#include "generation.h"

#include <torch/torch.h>

#include <limits>

namespace shc {

torch::Tensor sample_next_token(const torch::Tensor& logits, const GenerationOptions& o,
                                std::optional<at::Generator>& gen) {
  if (!o.do_sample || o.temperature == 0.0) return logits.argmax(-1);
  auto l = (logits / o.temperature).to(torch::kFloat).cpu();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (o.top_k > 0 && o.top_k < l.size(-1)) {
    auto kth = std::get<0>(l.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
    l = l.masked_fill(l < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    auto [sorted, order] = l.sort(-1, /*descending=*/true);
    auto probs = torch::softmax(sorted, -1);
    // Drop a token when the mass before it already reaches top_p (the first always stays).
    auto drop = (probs.cumsum(-1) - probs) >= o.top_p;
    l = l.scatter(-1, order, sorted.masked_fill(drop, neg_inf));
  }
  auto probs = torch::softmax(l, -1);
  auto next = gen ? torch::multinomial(probs, 1, false, *gen) : torch::multinomial(probs, 1);
  return next.squeeze(-1).to(logits.device());
}

torch::Tensor decode(const IncrementalDecoder& decoder, const torch::Tensor& ids,
                     const GenerationOptions& options) {
  TORCH_CHECK(ids.dim() == 2 && ids.size(1) >= 1, "generate: ids must be (batch, T >= 1)");
  TORCH_CHECK(options.temperature >= 0, "generate: temperature must be >= 0, got ",
              options.temperature);
  TORCH_CHECK(options.top_p > 0 && options.top_p <= 1, "generate: top_p must be in (0, 1]");
  torch::NoGradGuard no_grad;
  std::optional<at::Generator> gen;
  if (options.seed) gen = at::detail::createCPUGenerator(*options.seed);
  auto last = decoder.start(ids);
  auto out = ids;
  auto finished = torch::zeros({ids.size(0)}, torch::dtype(torch::kBool).device(ids.device()));
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    auto next = sample_next_token(last, options, gen).to(ids.scalar_type());
    if (options.eos_id >= 0) {
      next = torch::where(finished, torch::full_like(next, options.eos_id), next);
      finished = finished | (next == options.eos_id);
    }
    if (options.on_token) options.on_token(next);
    out = torch::cat({out, next.unsqueeze(1)}, 1);
    if (options.eos_id >= 0 && finished.all().item<bool>()) break;
    if (options.stop && options.stop()) break;
    if (i + 1 < options.max_new_tokens) last = decoder.next(next);
  }
  return out;
}

}  // namespace shc
