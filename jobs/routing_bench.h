// Routing micro-benchmark (SPEC §12): the time to produce H_res for every token of a batch, for
// each residual kind's own router code (core/routing/), at several stream counts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shc::jobs {

struct RoutingBenchOptions {
  int64_t tokens = 4096;  // T
  int64_t hidden = 1024;  // d; the projection reads n*d features per token
  std::vector<int64_t> streams{2, 4, 8, 16};
  int64_t repeats = 10;  // timed runs per case (the median is reported)
  int64_t warmup = 2;
};

struct RoutingBenchResult {
  std::string method;  // shc | mhc | hc
  int64_t n = 0;
  int64_t iters = 0;  // Sinkhorn iterations (0 where none)
  std::string pass;   // fwd | fwd_bwd
  bool with_projection = false;
  double ns_per_token = 0;  // median over repeats
};

// Runs every (method, n, pass, projection) case, logging one line per case.
std::vector<RoutingBenchResult> run_routing_bench(const RoutingBenchOptions& options);

// The results as a JSON document: {"tokens":..,"hidden":..,"threads":..,"results":[...]}.
std::string routing_bench_json(const RoutingBenchOptions& options,
                               const std::vector<RoutingBenchResult>& results);

// ns_per_token of (method, iters) divided by that of shc, for one n / pass / projection.
double routing_bench_ratio(const std::vector<RoutingBenchResult>& results,
                           const std::string& method, int64_t iters, int64_t n,
                           const std::string& pass, bool with_projection);

}  // namespace shc::jobs
