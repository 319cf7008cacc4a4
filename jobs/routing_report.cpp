#include "jobs/routing_report.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "checkpoints/file_io.h"
#include "jobs/plots.h"

namespace shc::jobs {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A record's number, NaN when absent or null (a non-finite value).
double number(const ordered_json& record, const std::string& key) {
  const auto it = record.find(key);
  return it == record.end() || !it->is_number() ? kNaN : it->get<double>();
}

bool has(const ordered_json& records, const std::string& key) {
  return !records.empty() && records.front().contains(key);
}

// reduce(values of `key` over the records), or nothing when the records lack it.
template <typename Reduce>
void put_reduced(ordered_json& out, const std::string& name, const ordered_json& records,
                 const std::string& key, Reduce reduce) {
  if (!has(records, key)) return;
  std::vector<double> values;
  for (const auto& r : records) values.push_back(number(r, key));
  out[name] = reduce(values);
}

// NaN (a diverged sublayer, null in the JSON) wins, so a summary never hides one.
double max_of(const std::vector<double>& v) {
  double out = -std::numeric_limits<double>::infinity();
  for (double x : v) out = std::isnan(x) || std::isnan(out) ? kNaN : std::max(out, x);
  return out;
}
double min_of(const std::vector<double>& v) {
  double out = std::numeric_limits<double>::infinity();
  for (double x : v) out = std::isnan(x) || std::isnan(out) ? kNaN : std::min(out, x);
  return out;
}
double mean_of(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return sum / double(v.size());
}

// Depth plots put the attention sublayer of layer l at x = l and its FFN at l + 0.5.
constexpr const char* kDepthLabel = "layer (attention sublayer at l, FFN sublayer at l + 0.5)";

PlotSeries series_of(const std::string& title, const ordered_json& records,
                     const std::string& x_key, double x_scale, const std::string& y_key) {
  PlotSeries s{title, {}, {}};
  for (const auto& r : records) {
    s.x.push_back(number(r, x_key) * x_scale);
    s.y.push_back(number(r, y_key));
  }
  return s;
}

// A dashed horizontal line at y over the x range of the plot's first series.
PlotSeries reference(const std::string& title, const LinePlot& plot, double y) {
  const auto& x = plot.series.front().x;
  const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
  return {title, {*lo, *hi}, {y, y}, PlotSeries::Style::kReference};
}

// Log scale when every value is positive and they span more than two decades (an exploding
// composite gain of unconstrained hc), linear otherwise.
bool spans_decades(const LinePlot& plot) {
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (const auto& s : plot.series) {
    for (double y : s.y) {
      if (!std::isfinite(y)) continue;
      if (y <= 0) return false;
      lo = std::min(lo, y);
      hi = std::max(hi, y);
    }
  }
  return hi > 100 * lo;
}

}  // namespace

ordered_json summarize_sublayers(const ordered_json& sublayers) {
  ordered_json out = ordered_json::object();
  put_reduced(out, "spectral_norm_max", sublayers, "spectral_norm_max", max_of);
  put_reduced(out, "spectral_norm_mean", sublayers, "spectral_norm_mean", mean_of);
  put_reduced(out, "spectral_norm_min", sublayers, "spectral_norm_min", min_of);
  put_reduced(out, "composite_gain_max", sublayers, "composite_gain_max", max_of);
  if (has(sublayers, "composite_row_gain_max")) {
    out["final_composite_row_gain_max"] = number(sublayers.back(), "composite_row_gain_max");
    out["final_composite_col_gain_max"] = number(sublayers.back(), "composite_col_gain_max");
  }
  put_reduced(out, "alpha_entropy_mean", sublayers, "alpha_entropy_mean", mean_of);
  put_reduced(out, "n_eff_mean", sublayers, "n_eff_mean", mean_of);
  return out;
}

void write_layers_csv(const ordered_json& analysis, const std::string& path) {
  std::vector<std::string> columns;
  for (const auto& checkpoint : analysis.at("checkpoints")) {
    for (const auto& record : checkpoint.at("sublayers")) {
      for (const auto& item : record.items()) {
        if (std::find(columns.begin(), columns.end(), item.key()) == columns.end())
          columns.push_back(item.key());
      }
    }
  }
  std::ostringstream csv;
  csv << "step";
  for (const auto& c : columns) csv << "," << c;
  csv << "\n";
  for (const auto& checkpoint : analysis.at("checkpoints")) {
    for (const auto& record : checkpoint.at("sublayers")) {
      csv << checkpoint.at("step").get<int64_t>();
      for (const auto& c : columns) {
        csv << ",";
        const auto it = record.find(c);
        if (it == record.end() || it->is_null()) continue;
        // Numbers as JSON writes them (shortest round trip); strings are plain names.
        csv << (it->is_string() ? it->get<std::string>() : it->dump());
      }
      csv << "\n";
    }
  }
  checkpoints::write_file_atomically(path, csv.str());
}

std::vector<std::string> write_routing_plots(const ordered_json& analysis, const std::string& dir) {
  std::vector<std::string> written;
  auto draw = [&](const LinePlot& plot, const std::string& name) {
    write_line_plot(plot, dir, name);
    written.push_back(name + ".png");
  };
  const auto& config = analysis.at("model").at("config");
  const std::string residual = config.at("residual").get<std::string>();
  const bool bounded = residual == "shc" || residual == "mhc";  // ||H_res||_2 <= 1 by design
  const double ln_top_k = std::log(config.at("top_k").get<double>());
  const auto& checkpoints = analysis.at("checkpoints");
  const auto& last = checkpoints.back();
  const auto& layers = last.at("sublayers");
  const std::string model = analysis.at("model").at("summary").get<std::string>();
  const std::string at_step =
      "\n" + model + ", step " + std::to_string(last.at("step").get<int64_t>());
  auto by_depth = [&](const std::string& title, const std::string& y_label,
                      std::vector<PlotSeries> series) {
    LinePlot p{title + at_step, kDepthLabel, y_label, std::move(series)};
    p.x_tick_step = 1;
    return p;
  };
  auto depth_series = [&](const std::string& title, const std::string& key) {
    return series_of(title, layers, "depth", 0.5, key);
  };

  if (has(layers, "spectral_norm_max")) {
    auto p = by_depth("Spectral norm of H_res per token, by depth", "‖H_res‖₂ per token",
                      {depth_series("max over tokens", "spectral_norm_max"),
                       depth_series("mean over tokens", "spectral_norm_mean"),
                       depth_series("min over tokens", "spectral_norm_min")});
    if (bounded) p.series.push_back(reference("bound ‖H_res‖₂ = 1", p, 1.0));
    draw(p, "spectral_norm_vs_depth");
  }
  if (has(layers, "composite_row_gain_max")) {
    // The mHC paper's "Amax gain magnitude" of the composite residual map H_res(l)...H_res(0):
    // its largest absolute row sum bounds the forward signal gain, its largest absolute column
    // sum the backward (gradient) gain.
    auto p = by_depth("Composite gain of ∏ H_res up to each sublayer (mHC Amax)",
                      "largest absolute row / column sum of the product",
                      {depth_series("max row sum (forward)", "composite_row_gain_max"),
                       depth_series("max column sum (backward)", "composite_col_gain_max"),
                       depth_series("mean row sum", "composite_row_gain_mean"),
                       depth_series("mean column sum", "composite_col_gain_mean")});
    p.series.push_back(reference("gain 1", p, 1.0));
    p.log_y = spans_decades(p);
    draw(p, "composite_gain_vs_depth");
  }
  if (has(layers, "alpha_entropy_mean")) {
    auto p = by_depth("Entropy of the Cayley mixture weights α per token, by depth",
                      "entropy of α (nats)",
                      {depth_series("max over tokens", "alpha_entropy_max"),
                       depth_series("mean over tokens", "alpha_entropy_mean"),
                       depth_series("min over tokens", "alpha_entropy_min")});
    p.series.push_back(reference("ln top_k (uniform over the kept bases)", p, ln_top_k));
    draw(p, "alpha_entropy_vs_depth");
  }
  if (has(layers, "n_eff_mean")) {
    auto p = by_depth("Adaptive rank: streams in use (n_eff) per token, by depth", "n_eff",
                      {depth_series("mean over tokens", "n_eff_mean")});
    p.series.push_back(reference("n (all streams)", p, config.at("n_streams").get<double>()));
    draw(p, "n_eff_vs_depth");
  }

  if (checkpoints.size() < 2) return written;
  ordered_json summaries = ordered_json::array();
  for (const auto& c : checkpoints) {
    ordered_json s = c.at("summary");
    s["step"] = c.at("step");
    summaries.push_back(s);
  }
  auto step_series = [&](const std::string& title, const std::string& key) {
    return series_of(title, summaries, "step", 1, key);
  };
  if (has(summaries, "spectral_norm_max")) {
    LinePlot p{"Spectral norm of H_res over training, all sublayers\n" + model,
               "training step",
               "‖H_res‖₂ per token",
               {step_series("max over tokens and sublayers", "spectral_norm_max"),
                step_series("mean over tokens and sublayers", "spectral_norm_mean"),
                step_series("min over tokens and sublayers", "spectral_norm_min")}};
    if (bounded) p.series.push_back(reference("bound ‖H_res‖₂ = 1", p, 1.0));
    draw(p, "spectral_norm_vs_step");
  }
  if (has(summaries, "final_composite_row_gain_max")) {
    LinePlot p{"Composite gain of ∏ H_res over the whole depth, over training\n" + model,
               "training step",
               "largest absolute row / column sum",
               {step_series("row sum (forward)", "final_composite_row_gain_max"),
                step_series("column sum (backward)", "final_composite_col_gain_max")}};
    p.series.push_back(reference("gain 1", p, 1.0));
    p.log_y = spans_decades(p);
    draw(p, "composite_gain_vs_step");
  }
  if (has(summaries, "alpha_entropy_mean")) {
    LinePlot p{"Entropy of the mixture weights α over training\n" + model,
               "training step",
               "entropy of α (nats)",
               {step_series("mean over tokens and sublayers", "alpha_entropy_mean")}};
    p.series.push_back(reference("ln top_k (uniform over the kept bases)", p, ln_top_k));
    draw(p, "alpha_entropy_vs_step");
  }
  return written;
}

}  // namespace shc::jobs
