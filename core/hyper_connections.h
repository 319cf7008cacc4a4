// Hyper-connections for any LibTorch model (SPEC §4.3; in the spirit of the `hyper-connections`
// package, seed 003): wrap any branch f of a residual network so that the residual becomes n
// streams mixed by one of the residual kinds of SPEC §4.1.
//
//   auto [init, expand, reduce] = shc::make_hyper_connections(4, options);
//   auto block = init(512, torch::nn::Linear(512, 512));  // the wrapped branch (a module)
//   auto s = expand(x);        // (..., 512) -> (..., 4, 512): every stream starts as x
//   s = block(s);              // S' = H_res S + H_post f(H_pre S), one per branch
//   x = reduce(s);             // (..., 4, 512) -> (..., 512): the sum of the streams
//
// The routing (H_pre, H_post, H_res per token from x~ = RMSNorm(vec S)) is the core's
// HyperConnection with its router (core/hyper_connection.h, core/routing/): the wrapper only
// lays out the streams. Unlike SHCBlock, the wrapper does not normalise the branch input; a
// branch that wants a pre-norm includes it.
//
// - kind: hc, mhc, shc or history (history_router.h: the n streams are the window of the last n
//   states, reduce returns the latest); `residual` is the plain residual.
// - disable: exactly x + f(x) with no parameters, expand and reduce the identity (for A/B runs
//   with unchanged code). Default: disabled when num_streams == 1 and num_fracs == 1 (nothing to
//   mix), so n = 1 is a plain residual for every kind.
// - num_fracs = m (frac-connections, Zhu et al. 2025): the feature dimension is split into m
//   fractions of d/m that are mixed like streams. The state holds n*m streams of width d/m
//   (stream i*m + k is fraction k of stream i); H_res mixes all n*m of them; fraction k of the
//   branch input reads only the n streams of fraction k (with their H_pre weights), and fraction k
//   of the branch output goes to those streams (with their H_post weights). num_fracs = 1 is the
//   hyper-connection itself; streams and fractions combine. history needs num_fracs = 1.
// - layer_index: the static H_pre reads stream (layer_index mod n) (of every fraction), as in the
//   HC paper; `init` numbers its branches 0, 1, 2, ... in the order it creates them.
#pragma once

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "config.h"
#include "hyper_connection.h"

namespace shc {

struct HyperConnectionsOptions {
  TORCH_ARG(ResidualKind, kind) = ResidualKind::kHC;
  TORCH_ARG(int64_t, num_fracs) = 1;
  // Unset: disabled exactly when num_streams == 1 and num_fracs == 1.
  TORCH_ARG(std::optional<bool>, disable) = std::nullopt;
  TORCH_ARG(double, routing_init_scale) = 0.01;  // dynamic-projection scale (hc, mhc, shc)
  TORCH_ARG(int64_t, k_mixture) = 2;             // shc
  TORCH_ARG(int64_t, top_k) = 2;                 // shc
  TORCH_ARG(int64_t, sinkhorn_iters) = 20;       // mhc
  TORCH_ARG(double, norm_eps) = 1e-6;            // of x~ = RMSNorm(vec S)
  TORCH_ARG(double, history_floor) = 0.0;        // history: weight of the latest state >= this
  TORCH_ARG(double, history_tau) = 0.0;          // history: Gumbel temperature in training, 0 off
  TORCH_ARG(bool, history_detach) = false;       // history: gradient only via the latest state
};

using BranchFunction = std::function<torch::Tensor(const torch::Tensor&)>;

// (..., d) -> (..., n*m, d/m): every stream a copy of x, split into m fractions.
torch::Tensor expand_streams(const torch::Tensor& x, int64_t num_streams, int64_t num_fracs);
// (..., n*m, d/m) -> (..., d): the sum over the n streams (history: the latest state, stream 0).
torch::Tensor reduce_streams(const torch::Tensor& streams, int64_t num_streams, int64_t num_fracs,
                             ResidualKind kind);

// One wrapped branch. The state `residual` is (..., n*m, d/m), or (..., d) when disabled.
class HyperConnectionBranchImpl : public torch::nn::Module {
 public:
  HyperConnectionBranchImpl(int64_t dim, int64_t num_streams,
                            const HyperConnectionsOptions& options = {}, int64_t layer_index = 0);

  // The branch forward() calls: a module (registered as the submodule "branch", so its
  // parameters are this module's) or a function (whose parameters stay the caller's).
  void set_branch(torch::nn::AnyModule branch);
  void set_branch(BranchFunction branch);

  // The new state: residual + f(residual) when disabled, else H_res S + H_post f(H_pre S).
  torch::Tensor forward(const torch::Tensor& residual);

  // The same in two halves, for branches that need more than one argument:
  //   auto in = hc->read(s);  auto y = f(in.input, ...);  s = hc->write(s, y, in.routing);
  struct Input {
    torch::Tensor input;  // (..., d): what the branch reads
    Routing routing;      // undefined when disabled
  };
  Input read(const torch::Tensor& residual);
  torch::Tensor write(const torch::Tensor& residual, const torch::Tensor& branch_output,
                      const Routing& routing);

  bool disabled() const { return disabled_; }
  int64_t dim() const { return dim_; }
  int64_t num_streams() const { return n_; }
  int64_t num_fracs() const { return m_; }
  ResidualKind kind() const { return kind_; }

  HyperConnection hc{nullptr};  // the core's routing for n*m streams of width d/m; null if disabled
  torch::nn::AnyModule branch;  // empty unless set_branch(module)

 private:
  void check_state(const torch::Tensor& residual) const;

  int64_t dim_, n_, m_;
  ResidualKind kind_;
  bool disabled_;
  BranchFunction function_;
};
TORCH_MODULE(HyperConnectionBranch);

// The wrapper factory with expand and reduce: what make_hyper_connections returns.
class HyperConnections {
 public:
  explicit HyperConnections(int64_t num_streams, HyperConnectionsOptions options = {});

  // A wrapped branch over features of width `dim`; the k-th call gets layer_index k.
  HyperConnectionBranch operator()(int64_t dim) const;  // no branch: use read and write
  HyperConnectionBranch operator()(int64_t dim, torch::nn::AnyModule branch) const;
  HyperConnectionBranch operator()(int64_t dim, BranchFunction branch) const;
  template <typename Impl>
  HyperConnectionBranch operator()(int64_t dim, const torch::nn::ModuleHolder<Impl>& branch) const {
    return (*this)(dim, torch::nn::AnyModule(branch));
  }

  // (..., d) -> (..., n*m, d/m), the identity when disabled.
  torch::Tensor expand(const torch::Tensor& x) const;
  // (..., n*m, d/m) -> (..., d): the sum of the streams (history: the latest state); the
  // identity when disabled.
  torch::Tensor reduce(const torch::Tensor& streams) const;

  bool disabled() const;
  int64_t num_streams() const { return n_; }
  const HyperConnectionsOptions& options() const { return options_; }

 private:
  int64_t n_;
  HyperConnectionsOptions options_;
  std::shared_ptr<int64_t> next_layer_;  // shared by copies: one numbering per factory
};

struct HyperConnectionFunctions {
  HyperConnections init;
  std::function<torch::Tensor(const torch::Tensor&)> expand, reduce;
};

// The init/expand/reduce trio: auto [init, expand, reduce] = make_hyper_connections(4, options);
HyperConnectionFunctions make_hyper_connections(int64_t num_streams,
                                                HyperConnectionsOptions options = {});

}  // namespace shc
