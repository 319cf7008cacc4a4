#include "routing_analyzer.h"

#include <torch/torch.h>

#include <sstream>

namespace shc {

void RunningStat::add(const torch::Tensor& values) {
  if (values.numel() == 0) return;
  auto v = values.detach().to(torch::kDouble);
  const double lo = v.min().item<double>(), hi = v.max().item<double>();
  min = count ? std::min(min, lo) : lo;
  max = count ? std::max(max, hi) : hi;
  sum += v.sum().item<double>();
  count += v.numel();
}

RoutingAnalyzer::RoutingAnalyzer(SHCTransformer model) : model_(std::move(model)) {
  model_->set_routing_observer(this);
  reset();
}

RoutingAnalyzer::~RoutingAnalyzer() {
  model_->set_routing_observer(nullptr);
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
  const bool was_training = model_->is_training();
  model_->eval();
  composite_ = torch::Tensor();
  model_->forward(ids);
  model_->train(was_training);
  tokens_ += ids.numel();
}

void RoutingAnalyzer::observe(int64_t layer, Sublayer sublayer, const Routing& r,
                              const torch::Tensor& n_eff) {
  auto& s = stats_.at(2 * layer + static_cast<int64_t>(sublayer));
  // The plain residual has H_res = H_pre = H_post = 1.
  const int64_t n = r.res.defined() ? r.res.size(-1) : 1;
  auto res = r.res.defined() ? r.res.detach().to(torch::kFloat).reshape({-1, n, n})
                             : torch::ones({1, 1, 1});
  s.spectral_norm.add(torch::linalg_matrix_norm(res, 2));
  if (r.pre.defined()) s.pre.add(r.pre);
  if (r.post.defined()) s.post.add(r.post);
  if (r.mix_weights.defined()) {
    auto a = r.mix_weights.detach().to(torch::kFloat).reshape({-1, r.mix_weights.size(-1)});
    s.alpha_entropy.add(-(a * torch::log(a.clamp_min(1e-30))).sum(-1));
    auto kept = (a > 0).sum(0);
    for (size_t i = 0; i < s.selection_counts.size(); ++i)
      s.selection_counts[i] += kept[i].item<int64_t>();
  }
  if (n_eff.defined()) {
    auto hist = torch::bincount(n_eff.reshape({-1}).cpu() - 1, {}, n);
    for (size_t i = 0; i < s.n_eff_histogram.size(); ++i)
      s.n_eff_histogram[i] += hist[i].item<int64_t>();
  }
  composite_ = composite_.defined() ? torch::matmul(res, composite_) : res;
  auto a = composite_.abs();
  s.composite_row_gain.add(std::get<0>(a.sum(-1).max(-1)));
  s.composite_col_gain.add(std::get<0>(a.sum(-2).max(-1)));
}

namespace {

void write_stat(std::ostringstream& o, const char* name, const RunningStat& s) {
  o << "\"" << name << "\":{\"mean\":" << s.mean() << ",\"min\":" << s.min << ",\"max\":" << s.max
    << ",\"count\":" << s.count << "}";
}

void write_counts(std::ostringstream& o, const char* name, const std::vector<int64_t>& v) {
  o << "\"" << name << "\":[";
  for (size_t i = 0; i < v.size(); ++i) o << (i ? "," : "") << v[i];
  o << "]";
}

}  // namespace

std::string RoutingAnalyzer::to_json() const {
  std::ostringstream o;
  o.precision(8);
  const auto& cfg = model_->config();
  o << "{\"model\":\"" << cfg.summary() << "\",\"tokens\":" << tokens_ << ",\"sublayers\":[";
  for (size_t i = 0; i < stats_.size(); ++i) {
    const auto& s = stats_[i];
    o << (i ? "," : "") << "{\"layer\":" << s.layer << ",\"sublayer\":\""
      << (s.sublayer == Sublayer::kAttention ? "attention" : "ffn") << "\",";
    write_stat(o, "spectral_norm", s.spectral_norm);
    o << ",";
    write_stat(o, "alpha_entropy", s.alpha_entropy);
    o << ",";
    write_counts(o, "selection_counts", s.selection_counts);
    o << ",";
    write_counts(o, "n_eff_histogram", s.n_eff_histogram);
    o << ",";
    write_stat(o, "h_pre", s.pre);
    o << ",";
    write_stat(o, "h_post", s.post);
    o << ",";
    write_stat(o, "composite_row_gain", s.composite_row_gain);
    o << ",";
    write_stat(o, "composite_col_gain", s.composite_col_gain);
    o << "}";
  }
  o << "]}";
  return o.str();
}

}  // namespace shc
