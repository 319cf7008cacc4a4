// What the multi-stream residual costs over the plain one (issue 9's targets): forward+backward
// tokens/s of the same model with each residual kind, with the fused hyper-connection kernels and
// with the composed reference ops, at the shapes of the targets; and the hyper-connection alone
// (route + read + write, forward+backward, identity branch) in ns per token.
//   build/bin/residual_overhead_bench --benchmark_counters_tabular=true
// Ratios are meaningful within one run on an otherwise idle machine.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <string>

#include "core/transformer.h"

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
BENCHMARK(HyperConnectionStep)
    ->ArgsProduct({{1, 2, 3}, {4}, {1024}, {1, 0}, {1024}})
    ->ArgsProduct({{3}, {4}, {128}, {1, 0}, {2048}})
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(1.0)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
