// What the multi-stream residual costs over the plain one (issue 9's targets): forward+backward
// tokens/s of the same model with each residual kind, with the fused hyper-connection kernels and
// with the composed reference ops, at the shapes of the targets; the step ratio against the
// residual with the two models taking turns (StepRatio, the figure the targets are stated in);
// and the hyper-connection alone
// (route + read + write, forward+backward, identity branch) in ns per token.
//   build/bin/residual_overhead_bench --benchmark_counters_tabular=true
// Ratios are meaningful within one run on an otherwise idle machine. StepRatio's `floor` is the
// least that ratio can be on this machine for an implementation that keeps each sublayer's passes
// to itself: the residual step plus the time the extra state traffic of a perfect fusion
// (jobs/routing_bench.h, hyper_connection_floor_bytes) takes at the measured copy bandwidth, over
// the residual step.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "core/transformer.h"
#include "jobs/host_memory.h"
#include "jobs/machine_peak.h"
#include "jobs/routing_bench.h"

namespace {

struct Shape {
  const char* name;
  shc::ModelConfig cfg;
  int64_t batch, seq;
};

Shape shape(int index) {
  if (index == 0) return {"tiny", shc::get_config("tiny"), 16, 128};
  auto small = shc::get_config("small");
  small.n_layers = 4;
  if (index == 1) return {"small_4_layers", small, 8, 256};
  auto wide = shc::get_config("small");
  wide.hidden_dim = 1024;
  wide.n_heads = 16;
  wide.ffn_dim = 4096;
  wide.n_layers = 2;
  return {"d1024_2_layers", wide, 4, 256};
}

const shc::ResidualKind kKinds[] = {shc::ResidualKind::kResidual, shc::ResidualKind::kHC,
                                    shc::ResidualKind::kMHC, shc::ResidualKind::kSHC};

// Arguments: shape index, kind index, fused (0/1).
void ModelStep(benchmark::State& state) {
  torch::set_num_threads(2);
  auto s = shape(int(state.range(0)));
  s.cfg.residual = kKinds[state.range(1)];
  const bool fused = state.range(2) != 0;
  torch::manual_seed(0);
  shc::SHCTransformer model(s.cfg);
  model->set_fused_routing(fused);
  auto ids = torch::randint(0, s.cfg.vocab_size, {s.batch, s.seq});
  for (auto _ : state) {
    model->zero_grad();
    model->forward(ids, ids).backward();
  }
  state.SetLabel(std::string(s.name) + " " + shc::to_string(s.cfg.residual) +
                 (fused ? " fused" : " composed"));
  state.counters["tokens_per_s"] =
      benchmark::Counter(double(s.batch * s.seq) * state.iterations(), benchmark::Counter::kIsRate);
}

// The ratio the targets are stated in, measured so that machine drift cancels: the residual model
// and the model of `kind` (fused) take turns, one training step each (which goes first alternates),
// and the counters are the medians over the pairs of each one's time and of their ratio.
// Arguments: shape index, kind index.
void StepRatio(benchmark::State& state) {
  torch::set_num_threads(2);
  auto s = shape(int(state.range(0)));
  auto make = [&](shc::ResidualKind kind) {
    auto cfg = s.cfg;
    cfg.residual = kind;
    torch::manual_seed(0);
    return shc::SHCTransformer(cfg);
  };
  auto residual = make(shc::ResidualKind::kResidual);
  auto other = make(kKinds[state.range(1)]);
  auto ids = torch::randint(0, s.cfg.vocab_size, {s.batch, s.seq});
  auto timed_step = [&](shc::SHCTransformer& model) {
    const auto start = std::chrono::steady_clock::now();
    model->zero_grad();
    model->forward(ids, ids).backward();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  timed_step(residual);  // warm-up: first-touch allocations
  timed_step(other);
  std::vector<double> base, kind, ratio;
  for (auto _ : state) {
    const bool residual_first = base.size() % 2 == 0;
    const double a = residual_first ? timed_step(residual) : 0;
    const double b = timed_step(other);
    const double r = residual_first ? a : timed_step(residual);
    base.push_back(r);
    kind.push_back(b);
    ratio.push_back(b / r);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double tokens = double(s.batch * s.seq);
  state.SetLabel(std::string(s.name) + " " + shc::to_string(kKinds[state.range(1)]) +
                 " / residual");
  state.counters["ratio"] = median(ratio);
  state.counters["residual_tok_s"] = tokens / median(base);
  state.counters["kind_tok_s"] = tokens / median(kind);
  // Per sublayer (two per layer) and token, what a perfect fusion moves beyond the residual's.
  const int64_t d = s.cfg.hidden_dim;
  const double extra_bytes = 2.0 * double(s.cfg.n_layers) * tokens *
                             (shc::jobs::hyper_connection_floor_bytes(s.cfg.n_streams, d) -
                              shc::jobs::hyper_connection_bytes(1, d, false, true) -
                              shc::jobs::hyper_connection_bytes(1, d, true, true));
  const double copy_bytes_per_s =
      1e9 * shc::jobs::measure_copy_bandwidth(int64_t{256} << 20, 5).gb_per_s;
  state.counters["floor"] = 1.0 + extra_bytes / copy_bytes_per_s / median(base);
}

// Arguments: kind index (hc, mhc, shc), n, d, fused (0/1), tokens.
void HyperConnectionStep(benchmark::State& state) {
  torch::set_num_threads(2);
  auto cfg = shc::get_config("small");
  cfg.residual = kKinds[state.range(0)];
  cfg.n_streams = state.range(1);
  cfg.hidden_dim = state.range(2);
  const bool fused = state.range(3) != 0;
  torch::manual_seed(0);
  shc::HyperConnection hc(cfg, 0);
  hc->set_fused(fused);
  const int64_t tokens = state.range(4);
  auto s = torch::randn({tokens, cfg.n_streams, cfg.hidden_dim}).requires_grad_(true);
  auto grad_out = torch::randn_like(s);
  auto inputs = hc->parameters();
  inputs.push_back(s);
  for (auto _ : state) {
    auto r = hc->route(s);
    auto out = hc->write(s, hc->read(s, r), r);
    // The gradients of the state and every routing parameter, not accumulated anywhere.
    torch::autograd::grad({out}, inputs, {grad_out}, /*retain_graph=*/false,
                          /*create_graph=*/false, /*allow_unused=*/true);
  }
  state.SetLabel(shc::to_string(cfg.residual) + (fused ? " fused" : " composed"));
  // The inverse of a rate of (tokens / 1e9) per second: nanoseconds per token.
  state.counters["ns_per_token"] =
      benchmark::Counter(double(tokens) * state.iterations() / 1e9,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

BENCHMARK(ModelStep)
    ->ArgsProduct({{0, 1, 2}, {0, 1, 2, 3}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0)
    ->UseRealTime();
BENCHMARK(StepRatio)->Args({0, 1})->Args({0, 2})->Args({0, 3})->Iterations(21)->UseRealTime();
BENCHMARK(StepRatio)->Args({1, 1})->Args({1, 2})->Args({1, 3})->Iterations(7)->UseRealTime();
BENCHMARK(HyperConnectionStep)
    ->ArgsProduct({{1, 2, 3}, {4}, {1024}, {1, 0}, {1024}})
    ->ArgsProduct({{3}, {4}, {128}, {1, 0}, {2048}})
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(1.0)
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  shc::keep_freed_host_memory();  // as `shc` runs (jobs/host_memory.h)
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
