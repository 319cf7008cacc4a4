#include "fused_hyper_connection.h"

#include <torch/csrc/autograd/custom_function.h>

#include "stream_kernels.h"

#include <unordered_set>
#include <utility>
#include <vector>

namespace shc {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// (..., k, d) -> (N, k, d), contiguous.
torch::Tensor tokens(const torch::Tensor& t, int64_t trailing) {
  std::vector<int64_t> shape{-1};
  for (int64_t i = t.dim() - trailing; i < t.dim(); ++i) shape.push_back(t.size(i));
  return t.reshape(shape).contiguous();
}

// The leading (token) dimensions of x followed by `trailing`.
std::vector<int64_t> token_shape(const torch::Tensor& x, std::vector<int64_t> trailing) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 2);
  shape.insert(shape.end(), trailing.begin(), trailing.end());
  return shape;
}

}  // namespace

// The parts of dX that the read's and the write's backward leave for the projection's backward
// (see the header). Autograd runs one backward pass on one thread at a time for these nodes, in
// the order the graph imposes, so no lock is needed.
struct StateGradientLink {
  // What read and write leave for the projection's backward (undefined: not left).
  struct Parts {
    torch::Tensor pre, grad_u;    // read:  dX[j] += pre[j] du               (N, k), (N, d)
    torch::Tensor res, grad_out;  // write: dX[j] += sum_i res[i,j] dX'[i]   (N, r, k), (N, r, d)
  };

  // The state the projection read, by identity only: while the projection's node lives it holds
  // that tensor (saved for backward), so the address cannot be reused by another tensor; the link
  // itself keeps nothing alive.
  const c10::TensorImpl* state = nullptr;
  std::weak_ptr<torch::autograd::Node> projection;  // its backward node (weak: the node holds us)
  bool spent = false;  // the projection's backward has run: later parts go to autograd
  Parts left;

  // Leave a part unless the projection's backward already ran; false: the caller returns it.
  bool leave_read(torch::Tensor pre, torch::Tensor grad_u) {
    if (spent) return false;
    left.pre = std::move(pre);
    left.grad_u = std::move(grad_u);
    return true;
  }
  bool leave_write(torch::Tensor res, torch::Tensor grad_out) {
    if (spent) return false;
    left.res = std::move(res);
    left.grad_out = std::move(grad_out);
    return true;
  }
  // The parts left so far, once: the link is spent afterwards.
  Parts take() {
    spent = true;
    return std::exchange(left, Parts{});
  }
};

namespace {

// The link travels in the autograd context as a capsule (saved_data holds IValues).
struct LinkCapsule : torch::CustomClassHolder {
  explicit LinkCapsule(StateGradient l) : link(std::move(l)) {}
  StateGradient link;
};

void save_link(AutogradContext* ctx, const StateGradient& link) {
  if (link)
    ctx->saved_data["link"] = at::IValue::make_capsule(c10::make_intrusive<LinkCapsule>(link));
}

StateGradient saved_link(AutogradContext* ctx) {
  auto it = ctx->saved_data.find("link");
  if (it == ctx->saved_data.end()) return nullptr;
  return c10::static_intrusive_pointer_cast<LinkCapsule>(it->second.toCapsule())->link;
}

// Each function saves its inputs as given (views of the caller's tensors, no copies) and takes
// their token-major (N, ...) views again in backward; the gradients get the inputs' shapes back.
struct StreamProjection : torch::autograd::Function<StreamProjection> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, int64_t count, double eps,
                               StateGradient link) {
    auto x3 = tokens(x, 2);
    auto inv_rms = (kernels::stream_sum_of_squares(x3) / static_cast<double>(count) + eps).rsqrt();
    auto products = at::mm(x3.view({x3.size(0), -1}), weight.t());
    ctx->save_for_backward({x, weight, inv_rms, products});
    ctx->saved_data["count"] = count;
    save_link(ctx, link);
    return (products * inv_rms.unsqueeze(1)).view(token_shape(x, {weight.size(0)}));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &inv_rms = saved[2], &products = saved[3];
    const double count = static_cast<double>(ctx->saved_data["count"].toInt());
    auto x3 = tokens(x, 2);
    auto g = grads[0].reshape({x3.size(0), -1});
    auto coef = (g * inv_rms.unsqueeze(1)).contiguous();
    // Whatever read and write left joins this pass; anything later goes through autograd.
    StateGradientLink::Parts parts;
    if (auto link = saved_link(ctx)) parts = link->take();
    // d inv_rms / dX = -inv_rms^3 X / count.
    auto scale = (-(g * products).sum(1) * inv_rms.pow(3) / count).contiguous();
    auto grads_x_w = kernels::stream_projection_backward(
        coef, weight.contiguous(), x3, scale, parts.pre, parts.grad_u, parts.res, parts.grad_out,
        ctx->needs_input_grad(0), ctx->needs_input_grad(1));
    auto grad_x = grads_x_w.x.defined() ? grads_x_w.x.view(x.sizes()) : torch::Tensor();
    return {grad_x, grads_x_w.weight, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

struct StreamRead : torch::autograd::Function<StreamRead> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& pre, StateGradient link) {
    ctx->save_for_backward({x, pre});
    save_link(ctx, link);
    return kernels::stream_read(tokens(x, 2), tokens(pre, 1)).view(token_shape(x, {x.size(-1)}));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &pre = saved[1];
    auto pre2 = tokens(pre, 1), grad_u = tokens(grads[0], 1);
    auto link = saved_link(ctx);
    const bool left = link && ctx->needs_input_grad(0) && link->leave_read(pre2, grad_u);
    auto g = kernels::stream_read_backward(grad_u, tokens(x, 2), pre2, /*with_x=*/!left);
    return {left ? torch::Tensor() : g.x.view(x.sizes()), g.pre.view(pre.sizes()), torch::Tensor()};
  }
};

struct StreamWrite : torch::autograd::Function<StreamWrite> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& res, const torch::Tensor& post,
                               const torch::Tensor& y, StateGradient link) {
    ctx->save_for_backward({x, res, post, y});
    save_link(ctx, link);
    return kernels::stream_write(tokens(x, 2), tokens(res, 2), tokens(post, 1), tokens(y, 1))
        .view(token_shape(x, {res.size(-2), x.size(-1)}));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &res = saved[1], &post = saved[2], &y = saved[3];
    auto res3 = tokens(res, 2), grad_out = tokens(grads[0], 2);
    auto link = saved_link(ctx);
    const bool left = link && ctx->needs_input_grad(0) && link->leave_write(res3, grad_out);
    auto g = kernels::stream_write_backward(grad_out, tokens(x, 2), res3, tokens(post, 1),
                                            tokens(y, 1), /*with_x=*/!left);
    return {left ? torch::Tensor() : g.x.view(x.sizes()), g.res.view(res.sizes()),
            g.post.view(post.sizes()), g.y.view(y.sizes()), torch::Tensor()};
  }
};

}  // namespace

bool fused_kernels_apply(const torch::Tensor& x, StreamOps ops) {
  return ops == StreamOps::kFused && x.device().is_cpu() &&
         (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble);
}

torch::Tensor stream_projection(const torch::Tensor& x, const torch::Tensor& weight, int64_t count,
                                double eps, StreamOps ops, StateGradient* link) {
  if (link) link->reset();
  // No projections (a router whose weights do not depend on the token): an empty (..., 0) view.
  if (weight.size(0) == 0) return x.select(-1, 0).narrow(-1, 0, 0);
  if (fused_kernels_apply(x, ops)) {
    StateGradient made;
    if (link && x.requires_grad()) {
      made = std::make_shared<StateGradientLink>();
      made->state = x.unsafeGetTensorImpl();
      *link = made;
    }
    auto raw = StreamProjection::apply(x, weight, count, eps, made);
    if (made) made->projection = raw.grad_fn();
    return raw;
  }
  auto inv_rms = (x.pow(2).sum({-2, -1}) / static_cast<double>(count) + eps).rsqrt();
  return torch::matmul(x.flatten(-2), weight.t()) * inv_rms.unsqueeze(-1);
}

namespace {

// Whether the autograd graph of `t` reaches `target` (breadth-first over at most kMaxNodes nodes:
// the routing ops between a projection and its coefficients are a few dozen, a few hundred with
// mHC's Sinkhorn iterations).
bool reaches(const torch::Tensor& t, const torch::autograd::Node* target) {
  constexpr size_t kMaxNodes = 4096;
  if (!target || !t.grad_fn()) return false;
  std::vector<torch::autograd::Node*> queue{t.grad_fn().get()};
  std::unordered_set<torch::autograd::Node*> seen(queue.begin(), queue.end());
  for (size_t i = 0; i < queue.size() && queue.size() < kMaxNodes; ++i) {
    if (queue[i] == target) return true;
    for (const auto& edge : queue[i]->next_edges()) {
      auto* next = edge.function.get();
      if (next && seen.insert(next).second) queue.push_back(next);
    }
  }
  return false;
}

// A link joins only passes over the very state its projection read, with coefficients made from
// the projection's output.
StateGradient joined(const StateGradient& link, const torch::Tensor& x,
                     const torch::Tensor& coefficients) {
  if (!link) return nullptr;
  const auto projection = link->projection.lock();  // alive: so is the state it saved
  return projection && link->state == x.unsafeGetTensorImpl() &&
                 reaches(coefficients, projection.get())
             ? link
             : nullptr;
}

}  // namespace

torch::Tensor stream_read(const torch::Tensor& x, const torch::Tensor& pre, StreamOps ops,
                          const StateGradient& link) {
  if (fused_kernels_apply(x, ops)) return StreamRead::apply(x, pre, joined(link, x, pre));
  // (..., 1, k) @ (..., k, d): one small batched GEMM per token.
  return torch::matmul(pre.unsqueeze(-2), x).squeeze(-2);
}

torch::Tensor stream_write(const torch::Tensor& x, const torch::Tensor& res,
                           const torch::Tensor& post, const torch::Tensor& y, StreamOps ops,
                           const StateGradient& link) {
  if (fused_kernels_apply(x, ops)) return StreamWrite::apply(x, res, post, y, joined(link, x, res));
  return torch::matmul(res, x) + post.unsqueeze(-1) * y.unsqueeze(-2);
}

}  // namespace shc
