// The fused hyper-connection operator (core/fused_hyper_connection.h, core/stream_kernels.h)
// against the composed reference ops: every kind, n in {1, 2, 4, 8}, a width that is not a multiple
// of any vector width, adaptive rank and stream compression; outputs and every gradient within
// 1e-10 in fp64 and 1e-5 in fp32; a central-difference gradient check of each fused function; fp32
// routing under bf16 autocast; and the activation memory that stream compression saves.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/fused_hyper_connection.h"
#include "core/precision.h"
#include "core/routing/sinkhorn.h"
#include "core/sparse_mixture.h"
#include "core/stream_kernels.h"
#include "core/transformer.h"
#include "jobs/counting_allocator.h"
#include "tests/kernel_test_util.h"
#include "tests/test_model_config.h"

namespace shc {
namespace {

// Randomises every parameter: the routing projections start at zero, where the dynamic terms
// (and their gradients through the state) would vanish and hide errors.
void randomize(torch::nn::Module& m, double scale = 0.2) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.normal_(0, scale);
}

// randomize, then the whole module in `dtype`.
void randomize(torch::nn::Module& m, torch::Dtype dtype, double scale = 0.2) {
  randomize(m, scale);
  m.to(dtype);
}

struct Result {
  torch::Tensor output;
  std::vector<torch::Tensor> grads;  // input state, then every parameter in order
  std::vector<std::string> names;

  // Every parameter's gradient (zeros where none reached it), named.
  void add_parameter_grads(torch::nn::Module& m) {
    for (auto& p : m.named_parameters()) {
      grads.push_back(p->grad().defined() ? p->grad().clone() : torch::zeros_like(p.value()));
      names.push_back(p.key());
    }
  }
};

// One block's forward and backward with a random cotangent on its output.
Result run_block(SHCBlock& block, const StreamState& state, const torch::Tensor& out_basis,
                 const torch::Tensor& cotangent, bool fused) {
  block->set_fused_routing(fused);
  for (auto& p : block->parameters()) p.mutable_grad() = torch::Tensor();
  auto coords = state.coords.detach().requires_grad_(true);
  torch::manual_seed(11);  // the same Gumbel noise for the rank selector in both runs
  auto out = block->forward(StreamState{coords, state.basis}, nullptr, out_basis);
  (out * cotangent).sum().backward();
  Result r{out.detach(), {coords.grad()}, {"state"}};
  r.add_parameter_grads(*block);
  return r;
}

void expect_close(const Result& fused, const Result& reference, double tol,
                  const std::string& what) {
  auto max_error = [](const torch::Tensor& a, const torch::Tensor& b) {
    if (b.numel() == 0) return 0.0;
    return (a - b).abs().max().item<double>() / std::max(1.0, b.abs().max().item<double>());
  };
  EXPECT_LE(max_error(fused.output, reference.output), tol) << what << " output";
  ASSERT_EQ(fused.grads.size(), reference.grads.size());
  for (size_t i = 0; i < fused.grads.size(); ++i) {
    EXPECT_LE(max_error(fused.grads[i], reference.grads[i]), tol)
        << what << " gradient of " << (i < reference.names.size() ? reference.names[i] : "");
  }
}

struct Case {
  ResidualKind kind;
  int64_t n;
  bool adaptive_rank;
  int64_t stream_rank;
};

std::string describe(const Case& c, torch::Dtype dtype) {
  return to_string(c.kind) + " n=" + std::to_string(c.n) + (c.adaptive_rank ? " adaptive" : "") +
         " r=" + std::to_string(c.stream_rank) + " " + std::string(c10::toString(dtype));
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (auto kind : {ResidualKind::kHC, ResidualKind::kMHC, ResidualKind::kSHC}) {
    for (int64_t n : {1, 2, 4, 8}) out.push_back({kind, n, false, 0});
  }
  for (int64_t n : {2, 4, 8}) out.push_back({ResidualKind::kSHC, n, true, 0});
  out.push_back({ResidualKind::kSHC, 4, false, 2});
  out.push_back({ResidualKind::kSHC, 4, true, 1});
  out.push_back({ResidualKind::kMHC, 8, false, 3});
  return out;
}

void check_block_equality(torch::Dtype dtype, double tol) {
  for (const auto& c : cases()) {
    auto cfg = test::small_model_config(c.kind);
    cfg.hidden_dim = 36;  // not a multiple of any vector width (4, 8 or 16 lanes)
    cfg.n_heads = 2;
    cfg.n_streams = c.n;
    cfg.k_mixture = 3;
    cfg.top_k = 2;
    cfg.adaptive_rank = c.adaptive_rank;
    cfg.stream_rank = c.stream_rank;
    torch::manual_seed(3);
    SHCBlock block(cfg, /*layer=*/1);
    randomize(*block, dtype);
    const int64_t k = cfg.compressed_streams() ? c.stream_rank : c.n;
    auto coords = torch::randn({2, 5, k, cfg.hidden_dim}, dtype);
    torch::Tensor basis;
    if (cfg.compressed_streams()) {
      FactorizedKVCache codec(c.n, cfg.hidden_dim, c.stream_rank);
      randomize(*codec, dtype, 0.5);
      torch::NoGradGuard no_grad;
      basis = codec->basis();
    }
    auto cotangent = torch::randn({2, 5, k, cfg.hidden_dim}, dtype);
    const StreamState state{coords, basis};
    const auto what = describe(c, dtype);
    expect_close(run_block(block, state, basis, cotangent, true),
                 run_block(block, state, basis, cotangent, false), tol, what);
  }
}

TEST(FusedRouting, BlockEqualsReferenceInFp64) {
  check_block_equality(torch::kDouble, 1e-10);
}

TEST(FusedRouting, BlockEqualsReferenceInFp32) {
  check_block_equality(torch::kFloat, 1e-5);
}

// The whole model with compression: the state crosses units as C = U^T S, and the codec's
// rotation gets the same gradient from the fused path as from the composed one.
TEST(FusedRouting, CompressedModelEqualsReference) {
  auto cfg = test::small_model_config(ResidualKind::kSHC);
  cfg.stream_rank = 2;
  cfg.stream_offsets = true;
  torch::manual_seed(5);
  SHCTransformer model(cfg);
  randomize(*model, torch::kDouble, 0.1);
  auto ids = torch::randint(0, cfg.vocab_size, {2, 9});
  auto run = [&](bool fused) {
    model->set_fused_routing(fused);
    model->zero_grad();
    auto loss = model->forward(ids, ids);
    loss.backward();
    Result r{loss.detach(), {}, {}};
    r.add_parameter_grads(*model);
    return r;
  };
  EXPECT_EQ(model->embed(ids).size(2), 2) << "units exchange the rank-2 coordinates";
  expect_close(run(true), run(false), 1e-10, "compressed model");
}

// The folded coefficients (the basis moved into H_pre, H_res, H_post and the projection weight)
// equal the explicit decompression S = U C followed by the compression U^T S'.
TEST(FusedRouting, FoldedBasisEqualsExplicitDecompression) {
  auto cfg = test::small_model_config(ResidualKind::kSHC);
  cfg.stream_rank = 2;
  torch::manual_seed(4);
  SHCBlock block(cfg, 0);
  randomize(*block, torch::kDouble);
  FactorizedKVCache codec(cfg.n_streams, cfg.hidden_dim, 2);
  randomize(*codec, torch::kDouble, 0.5);
  auto u = codec->basis().detach();
  auto c = torch::randn({2, 6, 2, cfg.hidden_dim}, torch::kDouble);
  for (bool fused : {true, false}) {
    block->set_fused_routing(fused);
    torch::NoGradGuard no_grad;
    auto folded = block->forward(StreamState{c, u}, nullptr, u);
    auto explicit_form = torch::matmul(u.t(), block->forward(torch::matmul(u, c)));
    EXPECT_LE((folded - explicit_form).abs().max().item<double>(), 1e-12) << fused;
  }
}

// Central differences in fp64 on each fused function (LibTorch C++ has no gradcheck): the
// directional derivative of <out, w> along a random direction equals <grad, direction>.
void gradient_check(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& f,
                    std::vector<torch::Tensor> inputs, const std::string& what) {
  for (auto& x : inputs) x.requires_grad_(true);
  auto out = f(inputs);
  auto w = torch::randn_like(out);
  auto grads = torch::autograd::grad({(out * w).sum()}, inputs);
  constexpr double h = 1e-6;
  for (size_t i = 0; i < inputs.size(); ++i) {
    torch::NoGradGuard no_grad;
    auto dir = torch::randn_like(inputs[i]);
    auto shifted = [&](double step) {
      auto moved = inputs;
      moved[i] = inputs[i].detach() + step * dir;
      return (f(moved) * w).sum().item<double>();
    };
    const double numeric = (shifted(h) - shifted(-h)) / (2 * h);
    const double analytic = (grads[i] * dir).sum().item<double>();
    EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
        << what << " input " << i;
  }
}

TEST(FusedRouting, CentralDifferencesMatchTheBackwardKernels) {
  torch::manual_seed(2);
  const auto f64 = torch::kDouble;
  const int64_t n = 3, m = 4, d = 19;
  gradient_check(
      [&](const auto& in) {
        return stream_projection(in[0], in[1], n * d + 5, 1e-6, StreamOps::kFused);
      },
      {torch::randn({2, 3, n, d}, f64), torch::randn({7, n * d}, f64)}, "projection");
  gradient_check([](const auto& in) { return stream_read(in[0], in[1], StreamOps::kFused); },
                 {torch::randn({2, 3, n, d}, f64), torch::randn({2, 3, n}, f64)}, "read");
  gradient_check(
      [](const auto& in) { return stream_write(in[0], in[1], in[2], in[3], StreamOps::kFused); },
      {torch::randn({2, 3, n, d}, f64), torch::randn({2, 3, m, n}, f64),
       torch::randn({2, 3, m}, f64), torch::randn({2, 3, d}, f64)},
      "write (rectangular)");
}

// The projection's backward (two GEMMs and the state-gradient sweep) equals the formula, term by
// term, with and without the read's and the write's parts. The sweep runs on two threads, and X and
// W require grad as autograd's saved inputs do.
TEST(FusedRouting, ProjectionBackwardEqualsTheFormula) {
  torch::manual_seed(5);
  const auto f64 = torch::kDouble;
  const int64_t tokens = 600, k = 4, r = 3, d = 301, m = 6;
  test::ThreadCount threads(2);
  auto x = torch::randn({tokens, k, d}, f64).requires_grad_(true);
  auto weight = torch::randn({m, k * d}, f64).requires_grad_(true);
  auto coef = torch::randn({tokens, m}, f64), scale = torch::randn({tokens}, f64);
  auto pre = torch::randn({tokens, k}, f64), grad_u = torch::randn({tokens, d}, f64);
  auto res = torch::randn({tokens, r, k}, f64), grad_out = torch::randn({tokens, r, d}, f64);
  torch::NoGradGuard no_grad;  // as in a backward pass
  auto expected_x = torch::mm(coef, weight).view({tokens, k, d}) + scale.view({-1, 1, 1}) * x +
                    pre.unsqueeze(-1) * grad_u.unsqueeze(1) +
                    torch::matmul(res.transpose(1, 2), grad_out);
  auto expected_w = torch::mm(coef.t(), x.view({tokens, -1}));
  auto g = kernels::stream_projection_backward(coef, weight, x, scale, pre, grad_u, res, grad_out,
                                               true, true);
  EXPECT_TRUE(torch::allclose(g.x, expected_x, 1e-12, 1e-10));
  EXPECT_TRUE(torch::allclose(g.weight, expected_w, 1e-12, 1e-10));
  // Without the read and write parts, and each gradient alone.
  auto only_x =
      kernels::stream_projection_backward(coef, weight, x, scale, {}, {}, {}, {}, true, false);
  EXPECT_TRUE(torch::allclose(
      only_x.x, torch::mm(coef, weight).view({tokens, k, d}) + scale.view({-1, 1, 1}) * x, 1e-12,
      1e-10));
  EXPECT_FALSE(only_x.weight.defined());
  auto only_w =
      kernels::stream_projection_backward(coef, weight, x, scale, {}, {}, {}, {}, false, true);
  EXPECT_FALSE(only_w.x.defined());
  EXPECT_TRUE(torch::equal(only_w.weight, g.weight));
}

// The kernels split tokens between threads, and each output is summed in a fixed order: the
// same bits on one thread as on three (an uneven split). Enough tokens that every kernel's grain
// is exceeded, so the threaded path runs.
TEST(FusedRouting, KernelsGiveTheSameBitsOnAnyThreadCount) {
  torch::manual_seed(4);
  const int64_t tokens = 3000, k = 4, m = 3, d = 37;
  auto x = torch::randn({tokens, k, d}), coef = torch::randn({tokens, 5});
  auto weight = torch::randn({5, k * d});
  auto pre = torch::randn({tokens, k}), res = torch::randn({tokens, m, k});
  auto post = torch::randn({tokens, m}), y = torch::randn({tokens, d});
  auto grad_u = torch::randn({tokens, d}), grad_out = torch::randn({tokens, m, d});
  auto scale = torch::randn({tokens}), logits = torch::randn({tokens, k, k}) * 5;
  auto bases = torch::randn({k, 3, 3});
  auto run = [&] {
    std::vector<torch::Tensor> out{kernels::stream_sum_of_squares(x), kernels::stream_read(x, pre),
                                   kernels::stream_write(x, res, post, y)};
    auto r = kernels::stream_read_backward(grad_u, x, pre, true);
    auto w = kernels::stream_write_backward(grad_out, x, res, post, y, true);
    out.insert(out.end(), {r.x, r.pre, w.x, w.res, w.post, w.y});
    auto p = kernels::stream_projection_backward(coef, weight, x, scale, pre, grad_u, res, grad_out,
                                                 true, true);
    out.push_back(p.x);  // dW is one LibTorch GEMM, outside this property
    auto l = logits.clone().requires_grad_(true);
    auto h = sinkhorn_knopp(l, 20);
    h.backward(torch::ones_like(h));
    out.insert(out.end(), {h.detach(), l.grad()});
    auto z = logits.select(-1, 0).clone().requires_grad_(true);
    auto q = bases.clone().requires_grad_(true);
    auto mixing = sparse_mix(z, 2, q, StreamOps::kFused);
    mixing.res.backward(torch::ones_like(mixing.res));
    out.insert(out.end(), {mixing.alpha.detach(), mixing.res.detach(), z.grad(), q.grad()});
    return out;
  };
  test::expect_same_bits_on_one_and_three_threads(run);
}

// The fused path sums the state gradient of projection, read and write in the projection's
// backward (StateGradientLink). Every way of taking gradients must still give the composed
// reference's: a second backward pass over a retained graph, autograd::grad for the state alone,
// only the read or only the write reaching the loss, and coefficients a caller substituted (which
// must not join the link).
TEST(FusedRouting, JoinedStateGradientEqualsReferenceInEveryBackwardOrder) {
  auto cfg = test::small_model_config(ResidualKind::kSHC);
  cfg.hidden_dim = 20;
  torch::manual_seed(8);
  HyperConnection hc(cfg, 1);
  randomize(*hc, torch::kDouble);
  auto s0 = torch::randn({3, 4, cfg.n_streams, cfg.hidden_dim}, torch::kDouble);
  auto w = torch::randn_like(s0);
  auto w_u = torch::randn({3, 4, cfg.hidden_dim}, torch::kDouble);
  using Scenario = std::function<std::vector<torch::Tensor>(const torch::Tensor&)>;
  // Each scenario returns the gradients it took; branch: y = tanh(u).
  auto step = [&](const torch::Tensor& s, bool substitute_pre) {
    auto r = hc->route(s);
    if (substitute_pre) r.pre = r.pre.detach() * 1.5;
    auto u = hc->read(s, r);
    auto out = hc->write(s, torch::tanh(u), r);
    return std::make_pair(u, out);
  };
  std::vector<std::pair<std::string, Scenario>> scenarios = {
      {"two passes over a retained graph",
       [&](const torch::Tensor& s) {
         auto [u, out] = step(s, false);
         auto loss = (out * w).sum();
         loss.backward({}, /*retain_graph=*/true);
         auto first = s.grad().clone();
         loss.backward();
         return std::vector<torch::Tensor>{first, s.grad().clone()};
       }},
      {"autograd::grad of the state alone",
       [&](const torch::Tensor& s) {
         auto [u, out] = step(s, false);
         return torch::autograd::grad({(out * w).sum()}, {s});
       }},
      {"only the read reaches the loss",
       [&](const torch::Tensor& s) {
         auto [u, out] = step(s, false);
         return torch::autograd::grad({(u * w_u).sum()}, {s});
       }},
      {"only the write's direct path reaches the loss",
       [&](const torch::Tensor& s) {
         auto r = hc->route(s);
         auto out = hc->write(s, w_u, r);
         return torch::autograd::grad({(out * w).sum()}, {s});
       }},
      {"a substituted H_pre",
       [&](const torch::Tensor& s) {
         auto [u, out] = step(s, true);
         return torch::autograd::grad({(out * w).sum() + (u * w_u).sum()}, {s});
       }},
  };
  for (const auto& [what, scenario] : scenarios) {
    std::vector<std::vector<torch::Tensor>> results;
    for (bool fused : {true, false}) {
      hc->set_fused(fused);
      results.push_back(scenario(s0.clone().requires_grad_(true)));
    }
    ASSERT_EQ(results[0].size(), results[1].size()) << what;
    for (size_t i = 0; i < results[0].size(); ++i) {
      EXPECT_LE((results[0][i] - results[1][i]).abs().max().item<double>(), 1e-12)
          << what << ", gradient " << i;
    }
  }
}

// Observes the routing matrices of every sublayer.
struct RoutingCapture : RoutingObserver {
  std::vector<Routing> seen;
  void observe(int64_t, Sublayer, const Routing& r, const torch::Tensor&) override {
    seen.push_back(r);
  }
};

TEST(FusedRouting, RoutingAndStateStayFp32UnderBf16Autocast) {
  for (auto kind : {ResidualKind::kHC, ResidualKind::kMHC, ResidualKind::kSHC}) {
    for (bool fused : {true, false}) {
      auto cfg = test::small_model_config(kind);
      torch::manual_seed(9);
      SHCTransformer model(cfg);
      randomize(*model, 0.05);
      model->set_fused_routing(fused);
      RoutingCapture capture;
      model->set_routing_observer(&capture);
      auto ids = torch::randint(0, cfg.vocab_size, {2, 16});
      AutocastScope bf16(true, torch::kCPU);
      auto s = model->embed(ids);
      for (int64_t i = 0; i < cfg.n_layers; ++i) {
        s = model->run_block(i, s);
        EXPECT_EQ(s.scalar_type(), torch::kFloat) << to_string(kind) << " state after block " << i;
      }
      ASSERT_EQ(capture.seen.size(), size_t(2 * cfg.n_layers));
      for (const auto& r : capture.seen) {
        EXPECT_EQ(r.res.scalar_type(), torch::kFloat);
        EXPECT_EQ(r.pre.scalar_type(), torch::kFloat);
        EXPECT_EQ(r.post.scalar_type(), torch::kFloat);
        if (kind != ResidualKind::kHC) {
          // SHC: a convex mixture of orthogonal matrices; mHC: doubly stochastic.
          const double norm =
              torch::linalg_matrix_norm(r.res.to(torch::kDouble), 2).max().item<double>();
          EXPECT_LE(norm, 1 + 1e-6) << to_string(kind);
        }
      }
      model->set_routing_observer(nullptr);
    }
  }
}

// What autograd keeps after the forward pass (the graph's saved tensors plus the output), per
// token, for the model at a given stream rank.
int64_t activation_bytes(int64_t stream_rank) {
  auto& counter = jobs::CountingCpuAllocator::install();
  auto cfg = test::small_model_config(ResidualKind::kSHC);
  cfg.hidden_dim = 64;
  cfg.n_layers = 4;
  cfg.ffn_dim = 128;
  cfg.stream_rank = stream_rank;
  torch::manual_seed(1);
  SHCTransformer model(cfg);
  auto ids = torch::randint(0, cfg.vocab_size, {4, 32});
  const int64_t before = counter.live_bytes();
  auto loss = model->forward(ids, ids);
  const int64_t after = counter.live_bytes();
  loss.backward();
  return (after - before) / ids.numel();
}

TEST(FusedRouting, StreamCompressionLowersActivationMemory) {
  const int64_t full = activation_bytes(0), rank2 = activation_bytes(2),
                rank1 = activation_bytes(1);
  // Per block, the first sublayer's saved state shrinks from n*d to r*d floats: with n = 4, d = 64
  // that is (4 - r) * 64 * 4 bytes per token and block, 4 blocks.
  // The small per-token coefficient tensors the fold adds (H_res U etc.) cost a little back.
  EXPECT_LT(rank1, rank2);
  EXPECT_GE(full - rank2, 2 * 64 * 4 * 4 / 2) << "full " << full << " rank2 " << rank2;
}

}  // namespace
}  // namespace shc
