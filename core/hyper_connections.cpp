#include "hyper_connections.h"

#include <torch/torch.h>

#include "routing/hc_router.h"
#include "routing/mhc_router.h"
#include "routing/router.h"
#include "routing/shc_router.h"

namespace shc {

namespace {

bool disabled_by(int64_t n, const HyperConnectionsOptions& o) {
  return o.kind() == ResidualKind::kResidual || o.disable().value_or(n == 1 && o.num_fracs() == 1);
}

void check_options(int64_t dim, int64_t n, const HyperConnectionsOptions& o) {
  TORCH_CHECK(n >= 1, "HyperConnections: num_streams (", n, ") must be at least 1");
  TORCH_CHECK(o.num_fracs() >= 1, "HyperConnections: num_fracs (", o.num_fracs(),
              ") must be at least 1");
  TORCH_CHECK(dim >= 1 && dim % o.num_fracs() == 0, "HyperConnections: dim (", dim,
              ") must be a positive multiple of num_fracs (", o.num_fracs(), ")");
  TORCH_CHECK(o.kind() != ResidualKind::kHistory || o.num_fracs() == 1,
              "HyperConnections: history mixes whole states (one weight per window entry); "
              "num_fracs must be 1, got ",
              o.num_fracs());
  TORCH_CHECK(o.kind() != ResidualKind::kSHC || (o.top_k() >= 1 && o.top_k() <= o.k_mixture()),
              "HyperConnections: top_k (", o.top_k(), ") must be between 1 and k_mixture (",
              o.k_mixture(), ")");
  TORCH_CHECK(o.kind() != ResidualKind::kMHC || o.sinkhorn_iters() >= 1,
              "HyperConnections: sinkhorn_iters must be positive");
  TORCH_CHECK(o.history_floor() >= 0 && o.history_floor() < 1, "HyperConnections: history_floor (",
              o.history_floor(), ") must be in [0, 1)");
  TORCH_CHECK(o.history_tau() >= 0, "HyperConnections: history_tau must be >= 0 (0 = off)");
}

// The router configuration of n*m streams of width d/m.
ModelConfig router_config(int64_t dim, int64_t n, const HyperConnectionsOptions& o) {
  ModelConfig c;
  c.name = "hyper_connections";
  c.residual = o.kind();
  c.n_streams = n * o.num_fracs();
  c.hidden_dim = dim / o.num_fracs();
  c.norm_eps = o.norm_eps();
  c.routing_init_scale = o.routing_init_scale();
  c.k_mixture = o.k_mixture();
  c.top_k = o.top_k();
  c.sinkhorn_iters = o.sinkhorn_iters();
  c.history_floor = o.history_floor();
  c.history_tau = o.history_tau();
  c.history_detach = o.history_detach();
  return c;
}

// With fractions, the static H_pre reads stream (layer mod n) of every fraction, not one stream
// of the n*m: the routers' bias (one-hot for hc, +-3 logits for mhc/shc) is set per fraction.
void read_every_fraction(RouterImpl& router, int64_t n, int64_t m, int64_t layer) {
  torch::NoGradGuard no_grad;
  auto per_fraction = [&](const torch::Tensor& pattern) { return pattern.repeat_interleave(m); };
  if (auto* r = dynamic_cast<HCRouterImpl*>(&router)) {
    r->pre->bias.copy_(per_fraction(depth_one_hot(n, layer)));
  } else if (auto* r = dynamic_cast<MHCRouterImpl*>(&router)) {
    r->pre->bias.copy_(per_fraction(depth_read_logits(n, layer)));
  } else if (auto* r = dynamic_cast<SHCRouterImpl*>(&router)) {
    r->pre->bias.copy_(per_fraction(depth_read_logits(n, layer)));
  }
}

std::vector<int64_t> with_tail(const torch::Tensor& t, int64_t drop, std::vector<int64_t> tail) {
  auto shape = t.sizes().vec();
  shape.resize(shape.size() - drop);
  shape.insert(shape.end(), tail.begin(), tail.end());
  return shape;
}

}  // namespace

torch::Tensor expand_streams(const torch::Tensor& x, int64_t n, int64_t m) {
  const int64_t d = x.size(-1);
  TORCH_CHECK(d % m == 0, "expand_streams: the last dimension (", d,
              ") must be a multiple of num_fracs (", m, ")");
  auto fractions = x.reshape(with_tail(x, 1, {1, m, d / m}));
  return fractions.expand(with_tail(x, 1, {n, m, d / m})).reshape(with_tail(x, 1, {n * m, d / m}));
}

torch::Tensor reduce_streams(const torch::Tensor& s, int64_t n, int64_t m, ResidualKind kind) {
  TORCH_CHECK(s.dim() >= 2 && s.size(-2) == n * m, "reduce_streams: expected (..., ", n * m,
              ", width) streams, got ", s.sizes());
  if (kind == ResidualKind::kHistory) return s.select(-2, 0);
  const int64_t w = s.size(-1);
  return s.reshape(with_tail(s, 2, {n, m, w})).sum(-3).reshape(with_tail(s, 2, {m * w}));
}

HyperConnectionBranchImpl::HyperConnectionBranchImpl(int64_t dim, int64_t num_streams,
                                                     const HyperConnectionsOptions& options,
                                                     int64_t layer_index)
    : dim_(dim),
      n_(num_streams),
      m_(options.num_fracs()),
      kind_(options.kind()),
      disabled_(disabled_by(num_streams, options)) {
  check_options(dim, num_streams, options);
  TORCH_CHECK(layer_index >= 0, "HyperConnectionBranch: layer_index must be >= 0");
  if (disabled_) return;
  hc = register_module("hc", HyperConnection(router_config(dim, n_, options), layer_index));
  if (m_ > 1) read_every_fraction(*hc->router(), n_, m_, layer_index);
}

void HyperConnectionBranchImpl::set_branch(torch::nn::AnyModule module) {
  TORCH_CHECK(!module.is_empty(), "HyperConnectionBranch: empty branch module");
  if (!branch.is_empty()) unregister_module("branch");
  branch = std::move(module);
  register_module("branch", branch.ptr());
  function_ = nullptr;
}

void HyperConnectionBranchImpl::set_branch(BranchFunction f) {
  if (!branch.is_empty()) {
    unregister_module("branch");
    branch = {};
  }
  function_ = std::move(f);
}

void HyperConnectionBranchImpl::check_state(const torch::Tensor& s) const {
  if (disabled_) {
    TORCH_CHECK(s.dim() >= 1 && s.size(-1) == dim_, "HyperConnectionBranch (disabled): expected (",
                "..., ", dim_, "), got ", s.sizes());
    return;
  }
  TORCH_CHECK(s.dim() >= 2 && s.size(-2) == n_ * m_ && s.size(-1) == dim_ / m_,
              "HyperConnectionBranch: expected streams (..., n*num_fracs = ", n_ * m_,
              ", dim/num_fracs = ", dim_ / m_, ") as made by expand(); got ", s.sizes());
}

HyperConnectionBranchImpl::Input HyperConnectionBranchImpl::read(const torch::Tensor& s) {
  check_state(s);
  if (disabled_) return {s, {}};
  auto routing = hc->route(s);
  if (m_ == 1) return {hc->read(s, routing), routing};
  // Fraction k reads sum_i H_pre[i*m + k] S[i*m + k].
  const int64_t w = dim_ / m_;
  auto pre = routing.pre.to(s.scalar_type()).reshape(with_tail(routing.pre, 1, {n_, m_, 1}));
  auto u = (pre * s.reshape(with_tail(s, 2, {n_, m_, w}))).sum(-3);
  return {u.reshape(with_tail(s, 2, {dim_})), routing};
}

torch::Tensor HyperConnectionBranchImpl::write(const torch::Tensor& s, const torch::Tensor& y,
                                               const Routing& routing) {
  check_state(s);
  TORCH_CHECK(y.size(-1) == dim_, "HyperConnectionBranch: the branch output must have ", dim_,
              " features, got ", y.sizes());
  if (disabled_) return s + y;
  if (m_ == 1) return hc->write(s, y, routing);
  // S'[i*m + k] = sum_j H_res[i*m + k, j] S[j] + H_post[i*m + k] y_k.
  const auto dtype = s.scalar_type();
  const int64_t w = dim_ / m_;
  auto post = routing.post.to(dtype).reshape(with_tail(routing.post, 1, {n_, m_, 1}));
  auto fractions = y.reshape(with_tail(y, 1, {1, m_, w}));
  auto added = (post * fractions).reshape(with_tail(s, 2, {n_ * m_, w}));
  return torch::matmul(routing.res.to(dtype), s) + added;
}

torch::Tensor HyperConnectionBranchImpl::forward(const torch::Tensor& s) {
  TORCH_CHECK(!branch.is_empty() || function_,
              "HyperConnectionBranch: no branch to call (set_branch, or use read and write)");
  auto in = read(s);
  auto y = branch.is_empty() ? function_(in.input) : branch.forward(in.input);
  return write(s, y, in.routing);
}

HyperConnections::HyperConnections(int64_t num_streams, HyperConnectionsOptions options)
    : n_(num_streams), options_(std::move(options)), next_layer_(std::make_shared<int64_t>(0)) {
  TORCH_CHECK(n_ >= 1, "HyperConnections: num_streams (", n_, ") must be at least 1");
  TORCH_CHECK(options_.num_fracs() >= 1, "HyperConnections: num_fracs must be at least 1");
}

bool HyperConnections::disabled() const {
  return disabled_by(n_, options_);
}

HyperConnectionBranch HyperConnections::operator()(int64_t dim) const {
  return HyperConnectionBranch(dim, n_, options_, (*next_layer_)++);
}

HyperConnectionBranch HyperConnections::operator()(int64_t dim, torch::nn::AnyModule b) const {
  auto wrapped = (*this)(dim);
  wrapped->set_branch(std::move(b));
  return wrapped;
}

HyperConnectionBranch HyperConnections::operator()(int64_t dim, BranchFunction b) const {
  auto wrapped = (*this)(dim);
  wrapped->set_branch(std::move(b));
  return wrapped;
}

torch::Tensor HyperConnections::expand(const torch::Tensor& x) const {
  return disabled() ? x : expand_streams(x, n_, options_.num_fracs());
}

torch::Tensor HyperConnections::reduce(const torch::Tensor& s) const {
  return disabled() ? s : reduce_streams(s, n_, options_.num_fracs(), options_.kind());
}

HyperConnectionFunctions make_hyper_connections(int64_t num_streams,
                                                HyperConnectionsOptions options) {
  HyperConnections init(num_streams, std::move(options));
  return {init, [init](const torch::Tensor& x) { return init.expand(x); },
          [init](const torch::Tensor& s) { return init.reduce(s); }};
}

}  // namespace shc
