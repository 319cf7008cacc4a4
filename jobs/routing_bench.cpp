#include "routing_bench.h"

#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include <boost/log/trivial.hpp>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <stdexcept>

#include "core/routing/router.h"

namespace shc::jobs {

namespace {

struct Method {
  std::string name;
  ResidualKind kind;
  int64_t iters;
};

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

}  // namespace

std::vector<RoutingBenchResult> run_routing_bench(const RoutingBenchOptions& o) {
  if (o.tokens < 1 || o.hidden < 1 || o.repeats < 1 || o.streams.empty()) {
    throw std::invalid_argument("routing benchmark needs tokens, hidden, repeats >= 1 and streams");
  }
  const std::vector<Method> methods{{"shc", ResidualKind::kSHC, 0},
                                    {"mhc", ResidualKind::kMHC, 10},
                                    {"mhc", ResidualKind::kMHC, 20},
                                    {"hc", ResidualKind::kHC, 0}};
  std::vector<RoutingBenchResult> results;
  for (int64_t n : o.streams) {
    torch::manual_seed(n);
    auto x = torch::randn({o.tokens, n * o.hidden});
    for (const auto& m : methods) {
      ModelConfig cfg;
      cfg.hidden_dim = o.hidden;
      cfg.residual = m.kind;
      cfg.n_streams = n;
      cfg.k_mixture = 2;
      cfg.top_k = 2;
      cfg.sinkhorn_iters = std::max<int64_t>(m.iters, 1);
      auto router = make_router(cfg, 0);
      {
        // Trained-looking routing: non-zero dynamic weights, so no path is trivially constant.
        torch::NoGradGuard g;
        for (auto& p : router->parameters()) p.add_(torch::randn_like(p) * 0.02);
      }
      std::vector<torch::Tensor> params = router->parameters();
      auto coefficients = router->residual_coefficients(x).detach();
      auto grad_out = torch::randn({o.tokens, n, n});
      for (const std::string pass : {"fwd", "fwd_bwd"}) {
        for (bool with_projection : {false, true}) {
          const bool backward = pass == "fwd_bwd";
          auto input = (with_projection ? x : coefficients).detach().requires_grad_(backward);
          auto build = [&] {
            return with_projection
                       ? router->residual_from_coefficients(router->residual_coefficients(input))
                       : router->residual_from_coefficients(input);
          };
          double ns;
          if (backward) {
            auto inputs = params;
            inputs.push_back(input);
            ns = median_ns(o, [&] {
              torch::autograd::grad({build()}, inputs, {grad_out}, /*retain_graph=*/false,
                                    /*create_graph=*/false, /*allow_unused=*/true);
            });
          } else {
            torch::NoGradGuard g;
            ns = median_ns(o, [&] { build(); });
          }
          RoutingBenchResult r{m.name, n, m.iters, pass, with_projection, ns / double(o.tokens)};
          BOOST_LOG_TRIVIAL(info) << "routing bench: " << r.method
                                  << (r.iters ? "-" + std::to_string(r.iters) : "") << " n=" << n
                                  << " " << pass << (with_projection ? " +projection" : "") << ": "
                                  << r.ns_per_token << " ns/token";
          results.push_back(r);
        }
      }
    }
  }
  return results;
}

double routing_bench_ratio(const std::vector<RoutingBenchResult>& results,
                           const std::string& method, int64_t iters, int64_t n,
                           const std::string& pass, bool with_projection) {
  double num = 0, den = 0;
  for (const auto& r : results) {
    if (r.n != n || r.pass != pass || r.with_projection != with_projection) continue;
    if (r.method == method && r.iters == iters) num = r.ns_per_token;
    if (r.method == "shc") den = r.ns_per_token;
  }
  return den > 0 ? num / den : 0.0;
}

std::string routing_bench_json(const RoutingBenchOptions& o,
                               const std::vector<RoutingBenchResult>& results) {
  nlohmann::ordered_json report = {
      {"benchmark", "routing"}, {"tokens", o.tokens},
      {"hidden", o.hidden},     {"threads", torch::get_num_threads()},
      {"repeats", o.repeats},   {"results", nlohmann::ordered_json::array()}};
  for (const auto& r : results) {
    report["results"].push_back({{"method", r.method},
                                 {"n", r.n},
                                 {"iters", r.iters},
                                 {"pass", r.pass},
                                 {"with_projection", r.with_projection},
                                 {"ns_per_token", r.ns_per_token}});
  }
  return report.dump(2) + "\n";
}

}  // namespace shc::jobs
