// Routing micro-benchmark (SPEC §12), two scopes, each on the model's own code:
//   h_res             the time to produce H_res for every token of a batch, with each residual
//                     kind's router (core/routing/), with and without the coefficient projection;
//   hyper_connection  the whole routing step of one sublayer as the model runs it:
//                     HyperConnection::route + read + write (identity branch y = u), forward and
//                     forward+backward, beside the memory-traffic limit of that step on this
//                     machine (its measured copy bandwidth and the byte model below).
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
  int64_t copy_bytes = int64_t(256) << 20;  // buffer of the copy-bandwidth measurement
};

struct RoutingBenchResult {
  std::string method;  // shc | mhc | hc | residual (hyper_connection scope only, n = 1)
  int64_t n = 0;
  int64_t iters = 0;  // Sinkhorn iterations (0 where none)
  std::string pass;   // fwd | fwd_bwd
  bool with_projection = false;
  double ns_per_token = 0;      // median over repeats
  std::string scope = "h_res";  // h_res | hyper_connection
  // hyper_connection scope: bytes one ideal pass moves per token (hyper_connection_bytes) and
  // the time that takes at the measured copy bandwidth.
  double bytes_per_token = 0;
  double traffic_limit_ns_per_token = 0;
  // hyper_connection scope, fwd_bwd of a multi-stream kind: the two-pass floor
  // (hyper_connection_floor_bytes) and its time at the measured copy bandwidth (0 elsewhere).
  double floor_bytes_per_token = 0;
  double floor_ns_per_token = 0;
};

struct RoutingBenchReport {
  double copy_gb_per_s = 0;  // measured: (read + written bytes) / s of a large copy
  std::vector<RoutingBenchResult> results;
};

// The byte model of one sublayer's routing step per token, fp32 (`element_bytes` = 4), for an
// ideal fused operator that touches each operand once: forward reads S (n d) and y (d) and
// writes u (d) and S' (n d); backward reads dS' (n d), S (n d), y (d) and du (d) and writes
// dS (n d) and dy (d). Total (5n + 5) d elements; the per-token coefficients (O(n^2)) are
// negligible and not counted. The plain residual (n = 1, S' = S + y): forward reads S and y and
// writes S'; backward reads dS' and writes dS and dy: 6 d elements.
double hyper_connection_bytes(int64_t n, int64_t d, bool backward, bool plain_residual,
                              int64_t element_bytes = 4);

// The least an implementation that keeps each sublayer's passes to itself moves per token of one
// sublayer, forward+backward, fp32, once the branch f between the passes is counted. f splits each
// direction into two passes over the state: forward, u = H_pre S before f (reads S, writes u) and
// S' = H_res S + H_post y after it (reads S and y, writes S'); backward, before f's backward dy,
// dH_res and dH_post (read dS', S and y, write dy), after it dH_pre and then dS (read du, S and
// dS', write dS). The per-token coefficients may sit inside those passes (they are token-local), so
// nothing else need touch the state: (8n + 5) d elements, against the plain residual's 6 d.
// hyper_connection_bytes counts one pass each way, a lower bound that no implementation with a
// branch reaches. (Merging the passes of neighbouring sublayers, S' feeding the next projection
// while in cache and likewise dS, would go below this, to (6n + 5) d.)
double hyper_connection_floor_bytes(int64_t n, int64_t d, int64_t element_bytes = 4);

// Runs every case of both scopes (and the copy-bandwidth measurement), logging one line per case.
RoutingBenchReport run_routing_bench(const RoutingBenchOptions& options);

// The results as a JSON document: {"tokens":..,"hidden":..,"threads":..,
// "copy_bandwidth_gb_per_s":..,"byte_model":..,"results":[...]}.
std::string routing_bench_json(const RoutingBenchOptions& options,
                               const RoutingBenchReport& report);

// ns_per_token of (method, iters) divided by that of shc, for one n / pass / projection / scope.
double routing_bench_ratio(const std::vector<RoutingBenchResult>& results,
                           const std::string& method, int64_t iters, int64_t n,
                           const std::string& pass, bool with_projection,
                           const std::string& scope = "h_res");

// A readable table of the results (one line per n / pass / projection / scope).
std::string routing_bench_table(const RoutingBenchReport& report);

}  // namespace shc::jobs
