// Presets and config validation (SPEC §4.2): parameter counts against a closed form computed here
// from the architecture, the routing share of the 500m model, and clear errors for bad fields.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <stdexcept>

#include "core/config.h"
#include "core/transformer.h"

namespace shc {
namespace {

// Hyper-connection parameters of one sublayer: the projections of x~ (n*d wide) with their biases
// and one scale per projection, plus the Cayley generators for shc.
int64_t routing_per_sublayer(const ModelConfig& c) {
  const int64_t n = c.n_streams, nd = n * c.hidden_dim;
  switch (c.residual) {
    case ResidualKind::kResidual:
      return 0;
    case ResidualKind::kHC:
    case ResidualKind::kMHC:
      return (nd + 1) * (n * n + 2 * n) + 3;
    case ResidualKind::kSHC:
      return c.k_mixture * n * (n - 1) / 2 + (nd + 1) * (c.k_mixture + 2 * n) + 3;
    case ResidualKind::kHistory:
      return n;  // the window weights
  }
  return -1;
}

int64_t closed_form_parameters(const ModelConfig& c) {
  const int64_t d = c.hidden_dim, n = c.n_streams, hd = c.head_dim();
  const int64_t attention = d * c.n_heads * hd + d * 2 * c.kv_heads() * hd + c.n_heads * hd * d;
  const int64_t ffn = 3 * d * c.ffn_dim;
  const int64_t selector =
      c.adaptive_rank ? n * d * c.rank_hidden + c.rank_hidden + c.rank_hidden * n + n + n : 0;
  const int64_t block = 2 * d + attention + ffn + 2 * routing_per_sublayer(c) + selector;
  int64_t total = c.vocab_size * d + c.n_layers * block + d;
  if (!c.tie_embeddings) total += c.vocab_size * d;
  if (c.residual == ResidualKind::kHistory) {
    if (c.stream_offsets) total += n * d;  // no stream reducer: the head reads the latest state
  } else if (c.residual != ResidualKind::kResidual) {
    total += n * (n - 1) / 2;                              // stream reducer rotation
    if (c.compressed_streams()) total += n * (n - 1) / 2;  // stream codec rotation
    if (c.stream_offsets) total += n * d;
  }
  return total;
}

TEST(Presets, ParameterCountsMatchClosedForm) {
  for (const auto& name : preset_names()) {
    for (auto kind : {ResidualKind::kResidual, ResidualKind::kHC, ResidualKind::kMHC,
                      ResidualKind::kSHC, ResidualKind::kHistory}) {
      auto cfg = get_config(name);
      cfg.residual = kind;
      cfg.validate();
      std::cout << cfg.summary() << ": " << closed_form_parameters(cfg) << " parameters\n";
    }
  }
  // Building the model is what proves the count; the 1b+ presets need several GB, so the test
  // instantiates the CPU presets and 500m (all five kinds for the small ones).
  for (const auto& name : {"tiny", "small"}) {
    for (auto kind : {ResidualKind::kResidual, ResidualKind::kHC, ResidualKind::kMHC,
                      ResidualKind::kSHC, ResidualKind::kHistory}) {
      auto cfg = get_config(name);
      cfg.residual = kind;
      EXPECT_EQ(SHCTransformer(cfg)->num_parameters(), closed_form_parameters(cfg))
          << cfg.summary();
    }
  }
  auto tiny = get_config("tiny");
  tiny.adaptive_rank = true;
  tiny.stream_rank = 2;
  tiny.stream_offsets = true;
  tiny.tie_embeddings = false;
  tiny.n_kv_heads = 2;
  EXPECT_EQ(SHCTransformer(tiny)->num_parameters(), closed_form_parameters(tiny));
}

TEST(Presets, RoutingIsUnderOnePercentOf500m) {
  auto cfg = get_config("500m");
  cfg.adaptive_rank = true;  // the largest SHC routing configuration
  SHCTransformer m(cfg);
  auto parts = m->parameter_breakdown();
  const int64_t total = m->num_parameters();
  EXPECT_EQ(total, closed_form_parameters(cfg));
  const double share = double(parts["routing"]) / double(total);
  std::cout << "500m shc: " << total << " parameters, routing " << parts["routing"] << " ("
            << 100 * share << " %)\n";
  EXPECT_LT(share, 0.01);
  EXPECT_GT(total, 400'000'000);
  EXPECT_LT(total, 600'000'000);
}

void expect_config_error(const ModelConfig& cfg, const std::string& fragment) {
  try {
    cfg.validate();
    FAIL() << "expected an error containing: " << fragment;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(ConfigErrors, ClearMessages) {
  auto c = get_config("tiny");
  c.hidden_dim = 100;
  c.n_heads = 3;
  expect_config_error(c, "hidden_dim (100) must be divisible by n_heads (3)");

  c = get_config("tiny");
  c.k_mixture = 2;
  c.top_k = 3;
  expect_config_error(c, "top_k (3) must be between 1 and k_mixture (2)");

  c = get_config("tiny");
  c.n_kv_heads = 3;
  expect_config_error(c, "n_heads (4) must be a multiple of n_kv_heads (3)");

  c = get_config("tiny");
  c.stream_rank = 5;
  expect_config_error(c, "stream_rank (5) must be between 0 (off) and n_streams (4)");

  c = get_config("tiny");
  c.residual = ResidualKind::kMHC;
  c.adaptive_rank = true;
  expect_config_error(c, "adaptive_rank needs residual = shc");

  try {
    get_config("huge");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(),
                 "unknown model preset 'huge'; choose one of: tiny, small, 500m, 1b, 3b, 7b");
  }
  EXPECT_THROW(parse_residual_kind("dense"), std::invalid_argument);
  EXPECT_EQ(parse_residual_kind("mhc"), ResidualKind::kMHC);
}

}  // namespace
}  // namespace shc
