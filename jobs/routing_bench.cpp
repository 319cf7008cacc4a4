#include "routing_bench.h"

#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include <boost/log/trivial.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>

#include "core/hyper_connection.h"
#include "core/routing/router.h"
#include "jobs/machine_peak.h"

namespace shc::jobs {

namespace {

struct Method {
  std::string name;
  ResidualKind kind;
  int64_t iters;
};

const std::vector<Method>& methods() {
  static const std::vector<Method> m{{"shc", ResidualKind::kSHC, 0},
                                     {"mhc", ResidualKind::kMHC, 10},
                                     {"mhc", ResidualKind::kMHC, 20},
                                     {"hc", ResidualKind::kHC, 0}};
  return m;
}

ModelConfig bench_config(const RoutingBenchOptions& o, ResidualKind kind, int64_t n,
                         int64_t iters) {
  ModelConfig cfg;
  cfg.hidden_dim = o.hidden;
  cfg.residual = kind;
  cfg.n_streams = n;
  cfg.k_mixture = 2;
  cfg.top_k = 2;
  cfg.sinkhorn_iters = std::max<int64_t>(iters, 1);
  return cfg;
}

// Trained-looking routing: non-zero dynamic weights, so no path is trivially constant.
void perturb(torch::nn::Module& module) {
  torch::NoGradGuard g;
  for (auto& p : module.parameters()) p.add_(torch::randn_like(p) * 0.02);
}

// Median wall time of `fn` in nanoseconds.
template <typename Fn>
double median_ns(const RoutingBenchOptions& o, Fn&& fn) {
  for (int64_t i = 0; i < o.warmup; ++i) fn();
  std::vector<double> times;
  for (int64_t i = 0; i < o.repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    fn();
    times.push_back(
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Median ns of one pass of `f` on `input`: the forward alone (no autograd), or the forward and the
// gradients of `params` and `input` for the cotangent `grad_out` (accumulated nowhere).
double pass_ns(const RoutingBenchOptions& o, bool backward, std::vector<torch::Tensor> params,
               const torch::Tensor& input, const torch::Tensor& grad_out,
               const std::function<torch::Tensor(const torch::Tensor&)>& f) {
  if (!backward) {
    torch::NoGradGuard no_grad;
    return median_ns(o, [&] { f(input); });
  }
  auto in = input.detach().requires_grad_(true);
  params.push_back(in);
  return median_ns(o, [&] {
    torch::autograd::grad({f(in)}, params, {grad_out}, /*retain_graph=*/false,
                          /*create_graph=*/false, /*allow_unused=*/true);
  });
}

void log_result(const RoutingBenchResult& r) {
  std::ostringstream line;
  line << "routing bench [" << r.scope << "]: " << r.method
       << (r.iters ? "-" + std::to_string(r.iters) : "") << " n=" << r.n << " " << r.pass
       << (r.with_projection ? " +projection" : "") << ": " << r.ns_per_token << " ns/token";
  if (r.traffic_limit_ns_per_token > 0) {
    line << " (memory-traffic limit " << r.traffic_limit_ns_per_token
         << " ns/token: " << r.ns_per_token / r.traffic_limit_ns_per_token << "x)";
  }
  BOOST_LOG_TRIVIAL(info) << line.str();
}

// The H_res construction alone: each router's residual_coefficients / residual_from_coefficients.
void bench_h_res(const RoutingBenchOptions& o, int64_t n, std::vector<RoutingBenchResult>& out) {
  torch::manual_seed(n);
  auto x = torch::randn({o.tokens, n * o.hidden});
  for (const auto& m : methods()) {
    auto router = make_router(bench_config(o, m.kind, n, m.iters), 0);
    perturb(*router);
    std::vector<torch::Tensor> params = router->parameters();
    auto coefficients = router->residual_coefficients(x).detach();
    auto grad_out = torch::randn({o.tokens, n, n});
    for (const std::string pass : {"fwd", "fwd_bwd"}) {
      for (bool with_projection : {false, true}) {
        const bool backward = pass == "fwd_bwd";
        const double ns = pass_ns(
            o, backward, params, with_projection ? x : coefficients, grad_out,
            [&](const torch::Tensor& input) {
              return with_projection
                         ? router->residual_from_coefficients(router->residual_coefficients(input))
                         : router->residual_from_coefficients(input);
            });
        RoutingBenchResult r{m.name, n, m.iters, pass, with_projection, ns / double(o.tokens)};
        log_result(r);
        out.push_back(r);
      }
    }
  }
}

// One sublayer's whole routing step as SHCBlock runs it: route, read, (branch y = u), write.
void bench_hyper_connection(const RoutingBenchOptions& o, const std::string& name,
                            const ModelConfig& cfg, int64_t iters, double copy_gb_per_s,
                            std::vector<RoutingBenchResult>& out) {
  const int64_t n = cfg.streams();
  const bool plain = cfg.residual == ResidualKind::kResidual;
  torch::manual_seed(n);
  HyperConnection hc(cfg, /*depth=*/0);
  perturb(*hc);
  // (batch 1, T, n, d), the model's layout.
  auto streams = torch::randn({1, o.tokens, n, o.hidden});
  auto grad_out = torch::randn_like(streams);
  std::vector<torch::Tensor> params = hc->parameters();
  auto step = [&](const torch::Tensor& s) {
    auto routing = hc->route(s);
    auto u = hc->read(s, routing);
    return hc->write(s, u, routing);
  };
  for (const std::string pass : {"fwd", "fwd_bwd"}) {
    const bool backward = pass == "fwd_bwd";
    const double ns = pass_ns(o, backward, params, streams, grad_out, step);
    RoutingBenchResult r{name, n, iters, pass, /*with_projection=*/!plain, ns / double(o.tokens)};
    r.scope = "hyper_connection";
    r.bytes_per_token = hyper_connection_bytes(n, o.hidden, /*backward=*/false, plain) +
                        (backward ? hyper_connection_bytes(n, o.hidden, true, plain) : 0.0);
    r.traffic_limit_ns_per_token = r.bytes_per_token / copy_gb_per_s;  // GB/s = bytes/ns
    if (backward && !plain) {
      r.floor_bytes_per_token = hyper_connection_floor_bytes(n, o.hidden);
      r.floor_ns_per_token = r.floor_bytes_per_token / copy_gb_per_s;
    }
    log_result(r);
    out.push_back(r);
  }
}

}  // namespace

double hyper_connection_bytes(int64_t n, int64_t d, bool backward, bool plain_residual,
                              int64_t element_bytes) {
  int64_t elements;
  if (plain_residual) {
    elements = 3 * d;  // forward: S, y -> S'; backward: dS' -> dS, dy
  } else if (!backward) {
    elements = 2 * n * d + 2 * d;  // S, y -> u, S'
  } else {
    elements = 3 * n * d + 3 * d;  // dS', S, y, du -> dS, dy
  }
  return double(elements * element_bytes);
}

double hyper_connection_floor_bytes(int64_t n, int64_t d, int64_t element_bytes) {
  const int64_t forward_before_f = n * d + d;           // S -> u
  const int64_t forward_after_f = 2 * n * d + d;        // S, y -> S'
  const int64_t backward_before_f = 2 * n * d + 2 * d;  // dS', S, y -> dy
  const int64_t backward_after_f = 3 * n * d + d;       // du, S, dS' -> dS
  return double((forward_before_f + forward_after_f + backward_before_f + backward_after_f) *
                element_bytes);
}

RoutingBenchReport run_routing_bench(const RoutingBenchOptions& o) {
  if (o.tokens < 1 || o.hidden < 1 || o.repeats < 1 || o.streams.empty()) {
    throw std::invalid_argument("routing benchmark needs tokens, hidden, repeats >= 1 and streams");
  }
  RoutingBenchReport report;
  report.copy_gb_per_s = measure_copy_bandwidth(o.copy_bytes, 5).gb_per_s;
  BOOST_LOG_TRIVIAL(info) << "copy bandwidth: " << report.copy_gb_per_s << " GB/s (read + write, "
                          << (o.copy_bytes >> 20) << " MiB buffer)";
  for (int64_t n : o.streams) bench_h_res(o, n, report.results);
  // The plain residual once (it has one stream whatever n), then every kind at every n.
  ModelConfig residual = bench_config(o, ResidualKind::kResidual, 1, 0);
  bench_hyper_connection(o, "residual", residual, 0, report.copy_gb_per_s, report.results);
  for (int64_t n : o.streams) {
    for (const auto& m : methods()) {
      bench_hyper_connection(o, m.name, bench_config(o, m.kind, n, m.iters), m.iters,
                             report.copy_gb_per_s, report.results);
    }
  }
  return report;
}

double routing_bench_ratio(const std::vector<RoutingBenchResult>& results,
                           const std::string& method, int64_t iters, int64_t n,
                           const std::string& pass, bool with_projection,
                           const std::string& scope) {
  double num = 0, den = 0;
  for (const auto& r : results) {
    if (r.n != n || r.pass != pass || r.with_projection != with_projection || r.scope != scope) {
      continue;
    }
    if (r.method == method && r.iters == iters) num = r.ns_per_token;
    if (r.method == "shc") den = r.ns_per_token;
  }
  return den > 0 ? num / den : 0.0;
}

std::string routing_bench_json(const RoutingBenchOptions& o, const RoutingBenchReport& report) {
  nlohmann::ordered_json doc = {
      {"benchmark", "routing"},
      {"tokens", o.tokens},
      {"hidden", o.hidden},
      {"threads", torch::get_num_threads()},
      {"repeats", o.repeats},
      {"copy_bandwidth_gb_per_s", report.copy_gb_per_s},
      {"copy_bytes", o.copy_bytes},
      {"byte_model",
       "hyper_connection rows, fp32, per token and sublayer: forward reads S (n d) and y (d), "
       "writes u (d) and S' (n d); backward reads dS' (n d), S (n d), y (d), du (d), writes dS "
       "(n d) and dy (d): (2n+2) d + (3n+3) d elements; residual (n = 1): 3 d + 3 d. "
       "traffic_limit_ns_per_token = bytes_per_token / copy_bandwidth. floor_bytes_per_token "
       "(fwd_bwd rows of hc, mhc, shc): the two passes each way that the branch between them "
       "forces, forward S -> u and S, y -> S', backward dS', S, y -> dy and du, S, dS' -> dS: "
       "(8n+5) d elements; floor_ns_per_token = floor_bytes_per_token / copy_bandwidth"},
      {"results", nlohmann::ordered_json::array()}};
  for (const auto& r : report.results) {
    nlohmann::ordered_json row = {{"scope", r.scope},
                                  {"method", r.method},
                                  {"n", r.n},
                                  {"iters", r.iters},
                                  {"pass", r.pass},
                                  {"with_projection", r.with_projection},
                                  {"ns_per_token", r.ns_per_token}};
    if (r.scope == "hyper_connection") {
      row["bytes_per_token"] = r.bytes_per_token;
      row["traffic_limit_ns_per_token"] = r.traffic_limit_ns_per_token;
      row["x_traffic_limit"] = r.ns_per_token / r.traffic_limit_ns_per_token;
      if (r.floor_bytes_per_token > 0) {
        row["floor_bytes_per_token"] = r.floor_bytes_per_token;
        row["floor_ns_per_token"] = r.floor_ns_per_token;
        row["x_floor"] = r.ns_per_token / r.floor_ns_per_token;
      }
    }
    doc["results"].push_back(row);
  }
  return doc.dump(2) + "\n";
}

std::string routing_bench_table(const RoutingBenchReport& report) {
  std::ostringstream s;
  char line[256];
  // H_res construction: one row per (n, pass, projection), one column per method.
  std::map<std::tuple<int64_t, std::string, bool>, std::map<std::string, double>> h_res;
  std::map<std::pair<int64_t, std::string>, std::map<std::string, const RoutingBenchResult*>> step;
  for (const auto& r : report.results) {
    const std::string col = r.method + (r.iters ? "-" + std::to_string(r.iters) : "");
    if (r.scope == "h_res") {
      h_res[{r.n, r.pass, r.with_projection}][col] = r.ns_per_token;
    } else {
      step[{r.n, r.pass}][col] = &r;
    }
  }
  const std::vector<std::string> cols{"shc", "mhc-10", "mhc-20", "hc"};
  s << "H_res construction, ns/token\n";
  std::snprintf(line, sizeof line, "%4s %-8s %-4s %10s %10s %10s %10s %12s\n", "n", "pass", "proj",
                "shc", "mhc-10", "mhc-20", "hc", "mhc-20/shc");
  s << line;
  for (const auto& [key, row] : h_res) {
    const auto& [n, pass, proj] = key;
    auto get = [&](const std::string& c) { return row.count(c) ? row.at(c) : 0.0; };
    std::snprintf(line, sizeof line, "%4lld %-8s %-4s %10.0f %10.0f %10.0f %10.0f %11.1fx\n",
                  static_cast<long long>(n), pass.c_str(), proj ? "yes" : "no", get("shc"),
                  get("mhc-10"), get("mhc-20"), get("hc"),
                  get("shc") > 0 ? get("mhc-20") / get("shc") : 0.0);
    s << line;
  }
  s << "Hyper-connection step (route + read + write, y = u), ns/token [x memory-traffic limit] at "
    << report.copy_gb_per_s << " GB/s copy\n";
  std::snprintf(line, sizeof line, "%4s %-8s %10s %18s %18s %18s %18s\n", "n", "pass", "residual",
                "shc", "mhc-10", "mhc-20", "hc");
  s << line;
  const RoutingBenchResult* residual[2] = {nullptr, nullptr};
  for (const auto& [key, row] : step) {
    if (row.count("residual")) residual[key.second == "fwd_bwd"] = row.at("residual");
  }
  for (const auto& [key, row] : step) {
    if (key.first == 1) continue;
    auto cell = [&](const std::string& c) {
      char buf[64] = "-";
      if (row.count(c)) {
        const auto* r = row.at(c);
        std::snprintf(buf, sizeof buf, "%.0f [%.1fx]", r->ns_per_token,
                      r->ns_per_token / r->traffic_limit_ns_per_token);
      }
      return std::string(buf);
    };
    const auto* res = residual[key.second == "fwd_bwd"];
    std::snprintf(line, sizeof line, "%4lld %-8s %10.0f %18s %18s %18s %18s\n",
                  static_cast<long long>(key.first), key.second.c_str(),
                  res ? res->ns_per_token : 0.0, cell("shc").c_str(), cell("mhc-10").c_str(),
                  cell("mhc-20").c_str(), cell("hc").c_str());
    s << line;
  }
  return s.str();
}

}  // namespace shc::jobs
