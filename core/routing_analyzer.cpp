#include "routing_analyzer.h"

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace shc {

void RunningStat::add(const torch::Tensor& values) {
  if (values.numel() == 0) return;
  auto v = values.detach().to(torch::kCPU, torch::kDouble);
  RunningStat batch;
  batch.min = v.min().item<double>();
  batch.max = v.max().item<double>();
  batch.sum = v.sum().item<double>();
  batch.count = v.numel();
  merge(batch);
}

void RunningStat::merge(const RunningStat& other) {
  if (other.count == 0) return;
  min = count ? std::min(min, other.min) : other.min;
  max = count ? std::max(max, other.max) : other.max;
  sum += other.sum;
  count += other.count;
}

ScopedRoutingObserver::ScopedRoutingObserver(SHCTransformer model, RoutingObserver* observer)
    : model_(std::move(model)) {
  model_->set_routing_observer(observer);
}

ScopedRoutingObserver::~ScopedRoutingObserver() {
  model_->set_routing_observer(nullptr);
}

RoutingAnalyzer::RoutingAnalyzer(SHCTransformer model) : model_(std::move(model)) {
  reset();
}

void RoutingAnalyzer::reset() {
  const auto& cfg = model_->config();
  stats_.clear();
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    for (auto sub : {Sublayer::kAttention, Sublayer::kFeedForward}) {
      SublayerRouting s;
      s.layer = l;
      s.sublayer = sub;
      if (cfg.residual == ResidualKind::kSHC) s.selection_counts.assign(cfg.k_mixture, 0);
      if (cfg.adaptive_rank) s.n_eff_histogram.assign(cfg.n_streams, 0);
      stats_.push_back(std::move(s));
    }
  }
  tokens_ = 0;
}

void RoutingAnalyzer::analyze_batch(const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  EvalModeScope eval_mode(*model_);
  composite_ = torch::Tensor();
  {
    ScopedRoutingObserver attached(model_, this);
    model_->forward(ids);
  }
  tokens_ += ids.numel();
}

namespace {

// ||H||_2 of each matrix of (tokens, n, n); NaN for one with a non-finite entry (LAPACK's SVD
// refuses those), so that a diverged model is reported rather than stopping the analysis.
torch::Tensor spectral_norms(const torch::Tensor& matrices) {
  auto finite = torch::isfinite(matrices).flatten(1).all(1);
  auto norms =
      torch::full({matrices.size(0)}, std::numeric_limits<double>::quiet_NaN(), matrices.options());
  if (finite.any().item<bool>())
    norms.index_put_({finite}, torch::linalg_matrix_norm(matrices.index({finite}), 2));
  return norms;
}

}  // namespace

void RoutingAnalyzer::observe(int64_t layer, Sublayer sublayer, const Routing& r,
                              const torch::Tensor& n_eff) {
  // The plain residual (H = 1) routes nothing: every statistic stays empty.
  if (!r.res.defined()) return;
  auto& s = stats_.at(2 * layer + static_cast<int64_t>(sublayer));
  const int64_t n = r.res.size(-1);
  // fp64, so that the composite product over many layers adds no rounding of its own.
  auto res = r.res.detach().to(torch::kCPU, torch::kDouble).reshape({-1, n, n});
  s.spectral_norm.add(spectral_norms(res));
  if (model_->config().residual == ResidualKind::kMHC) {
    s.row_sum.add(res.sum(-1));
    s.col_sum.add(res.sum(-2));
    s.entry.add(res);
  }
  s.pre.add(r.pre);
  s.post.add(r.post);
  if (r.mix_weights.defined()) {
    auto a = r.mix_weights.detach().to(torch::kCPU, torch::kDouble);
    a = a.reshape({-1, a.size(-1)});
    s.alpha_entropy.add(-(a * torch::log(a.clamp_min(1e-300))).sum(-1));
    auto kept = (a > 0).sum(0);
    for (size_t i = 0; i < s.selection_counts.size(); ++i)
      s.selection_counts[i] += kept[i].item<int64_t>();
  }
  if (n_eff.defined()) {
    auto hist = torch::bincount(n_eff.reshape({-1}).cpu() - 1, {}, n);
    for (size_t i = 0; i < s.n_eff_histogram.size(); ++i)
      s.n_eff_histogram[i] += hist[i].item<int64_t>();
  }
  // Sublayers run in depth order, so this is H_res(here) ... H_res(first sublayer).
  composite_ = composite_.defined() ? torch::matmul(res, composite_) : res;
  auto a = composite_.abs();
  s.composite_row_gain.add(std::get<0>(a.sum(-1).max(-1)));
  s.composite_col_gain.add(std::get<0>(a.sum(-2).max(-1)));
}

namespace {

// The running statistics of a sublayer (const or not), in the order state() lays them out.
template <typename SublayerStats>
auto running_stats(SublayerStats& s) {
  return std::array{&s.spectral_norm,     &s.row_sum, &s.col_sum, &s.entry,
                    &s.alpha_entropy,     &s.pre,     &s.post,    &s.composite_row_gain,
                    &s.composite_col_gain};
}

}  // namespace

std::vector<double> RoutingAnalyzer::state() const {
  std::vector<double> out;
  for (const auto& s : stats_) {
    for (const RunningStat* stat : running_stats(s))
      out.insert(out.end(), {stat->sum, stat->min, stat->max, double(stat->count)});
    out.insert(out.end(), s.selection_counts.begin(), s.selection_counts.end());
    out.insert(out.end(), s.n_eff_histogram.begin(), s.n_eff_histogram.end());
  }
  out.push_back(double(tokens_));
  return out;
}

void RoutingAnalyzer::merge_state(const std::vector<double>& other) {
  if (other.size() != state().size()) {
    throw std::invalid_argument("RoutingAnalyzer::merge_state: a state of " +
                                std::to_string(other.size()) + " numbers, expected " +
                                std::to_string(state().size()) + " (another model config?)");
  }
  auto next = other.begin();
  for (auto& s : stats_) {
    for (RunningStat* stat : running_stats(s)) {
      RunningStat theirs;
      theirs.sum = *next++;
      theirs.min = *next++;
      theirs.max = *next++;
      theirs.count = int64_t(*next++);
      stat->merge(theirs);
    }
    for (auto& c : s.selection_counts) c += int64_t(*next++);
    for (auto& c : s.n_eff_histogram) c += int64_t(*next++);
  }
  tokens_ += int64_t(*next++);
}

namespace {

using ordered_json = nlohmann::ordered_json;

void put_stat(ordered_json& record, const std::string& name, const RunningStat& s) {
  if (s.count == 0) return;  // not a statistic of this kind: absent, not zero
  record[name + "_mean"] = s.mean();
  record[name + "_min"] = s.min;
  record[name + "_max"] = s.max;
}

ordered_json sublayer_record(const SublayerRouting& s, int64_t tokens) {
  ordered_json r;
  r["layer"] = s.layer;
  r["sublayer"] = s.sublayer == Sublayer::kAttention ? "attention" : "ffn";
  r["depth"] = 2 * s.layer + static_cast<int64_t>(s.sublayer);
  put_stat(r, "spectral_norm", s.spectral_norm);
  put_stat(r, "row_sum", s.row_sum);
  put_stat(r, "col_sum", s.col_sum);
  put_stat(r, "entry", s.entry);
  put_stat(r, "alpha_entropy", s.alpha_entropy);
  if (s.alpha_entropy.count > 0) {
    for (size_t i = 0; i < s.selection_counts.size(); ++i)
      r["selection_frequency_" + std::to_string(i)] = double(s.selection_counts[i]) / tokens;
  }
  if (tokens > 0 && !s.n_eff_histogram.empty()) {
    double weighted = 0;
    for (size_t m = 0; m < s.n_eff_histogram.size(); ++m) {
      r["n_eff_fraction_" + std::to_string(m + 1)] = double(s.n_eff_histogram[m]) / tokens;
      weighted += double(m + 1) * double(s.n_eff_histogram[m]);
    }
    r["n_eff_mean"] = weighted / tokens;
  }
  put_stat(r, "pre", s.pre);
  put_stat(r, "post", s.post);
  put_stat(r, "composite_row_gain", s.composite_row_gain);
  put_stat(r, "composite_col_gain", s.composite_col_gain);
  if (s.composite_row_gain.count > 0)
    r["composite_gain_max"] = std::max(s.composite_row_gain.max, s.composite_col_gain.max);
  return r;
}

}  // namespace

std::string RoutingAnalyzer::to_json() const {
  ordered_json out;
  out["model"] = model_->config().summary();
  out["tokens"] = tokens_;
  out["sublayers"] = ordered_json::array();
  for (const auto& s : stats_) out["sublayers"].push_back(sublayer_record(s, tokens_));
  return out.dump();
}

}  // namespace shc
