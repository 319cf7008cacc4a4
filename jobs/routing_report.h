// The report of `shc analyze-routing` (SPEC §8): an analysis document (JSON) and the files made
// from it. The document:
//   {"format": "shc-routing-analysis", "format_version": 1,
//    "model": {"family", "summary", "config"}, "data": {...}, "world_size": W,
//    "checkpoints": [{"source", "step", "tokens",
//                     "sublayers": [RoutingAnalyzer::to_json's flat records],
//                     "summary": {statistics over all sublayers}}, ...],   (by increasing step)
//    "plots": ["spectral_norm_vs_depth.png", ...]}
// A statistic the residual kind does not have is absent everywhere (never 0): the plain residual
// has no per-sublayer statistics at all and no plots.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace shc::jobs {

using ordered_json = nlohmann::ordered_json;

// The checkpoint "summary" of its sublayer records: "spectral_norm_max" / "_min" (over
// sublayers), "spectral_norm_mean", "alpha_entropy_mean" and "n_eff_mean" (means of the
// sublayers' means: every sublayer sees every token), "composite_gain_max" (over depth) and
// "final_composite_row_gain_max" / "final_composite_col_gain_max" (the whole depth's product),
// each only when the sublayers have it.
ordered_json summarize_sublayers(const ordered_json& sublayers);

// DIR/layers.csv: a header, then one row per checkpoint x layer x sublayer: "step", then every
// key of the sublayer records in their order; an absent statistic is an empty cell.
void write_layers_csv(const ordered_json& analysis, const std::string& path);

// The PNG plots for `analysis` into DIR (jobs/plots.h): for the last checkpoint the spectral
// norm, composite gain, alpha entropy (shc) and n_eff (adaptive rank) vs depth; with several
// checkpoints also the summary's spectral norm, final composite gain and alpha entropy vs step.
// Returns the file names written.
std::vector<std::string> write_routing_plots(const ordered_json& analysis, const std::string& dir);

}  // namespace shc::jobs
