#include "fused_hyper_connection.h"

#include <torch/csrc/autograd/custom_function.h>

#include "stream_kernels.h"

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

// Each function saves its inputs as given (views of the caller's tensors, no copies) and takes
// their token-major (N, ...) views again in backward; the gradients get the inputs' shapes back.
struct StreamProjection : torch::autograd::Function<StreamProjection> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, int64_t count, double eps) {
    auto x3 = tokens(x, 2);
    auto inv_rms = (kernels::stream_sum_of_squares(x3) / static_cast<double>(count) + eps).rsqrt();
    auto products = at::mm(x3.view({x3.size(0), -1}), weight.t());
    ctx->save_for_backward({x, weight, inv_rms, products});
    ctx->saved_data["count"] = count;
    return (products * inv_rms.unsqueeze(1)).view(token_shape(x, {weight.size(0)}));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &inv_rms = saved[2], &products = saved[3];
    const double count = static_cast<double>(ctx->saved_data["count"].toInt());
    auto x3 = tokens(x, 2);
    auto flat = x3.view({x3.size(0), -1});
    auto g = grads[0].reshape({flat.size(0), -1});
    auto g_products = g * inv_rms.unsqueeze(1);
    torch::Tensor grad_x, grad_w;
    if (ctx->needs_input_grad(0)) {
      // d inv_rms / dX = -inv_rms^3 X / count, applied in one fused pass (addcmul).
      auto g_inv = (g * products).sum(1);
      grad_x = at::mm(g_products, weight);
      grad_x.addcmul_(flat, (-g_inv * inv_rms.pow(3) / count).unsqueeze(1));
      grad_x = grad_x.view(x.sizes());
    }
    if (ctx->needs_input_grad(1)) grad_w = at::mm(g_products.t(), flat);
    return {grad_x, grad_w, torch::Tensor(), torch::Tensor()};
  }
};

struct StreamRead : torch::autograd::Function<StreamRead> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& pre) {
    ctx->save_for_backward({x, pre});
    return kernels::stream_read(tokens(x, 2), tokens(pre, 1)).view(token_shape(x, {x.size(-1)}));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &pre = saved[1];
    auto g = kernels::stream_read_backward(tokens(grads[0], 1), tokens(x, 2), tokens(pre, 1));
    return {g.x.view(x.sizes()), g.pre.view(pre.sizes())};
  }
};

struct StreamWrite : torch::autograd::Function<StreamWrite> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& res, const torch::Tensor& post,
                               const torch::Tensor& y) {
    ctx->save_for_backward({x, res, post, y});
    return kernels::stream_write(tokens(x, 2), tokens(res, 2), tokens(post, 1), tokens(y, 1))
        .view(token_shape(x, {res.size(-2), x.size(-1)}));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &res = saved[1], &post = saved[2], &y = saved[3];
    auto g = kernels::stream_write_backward(tokens(grads[0], 2), tokens(x, 2), tokens(res, 2),
                                            tokens(post, 1), tokens(y, 1));
    return {g.x.view(x.sizes()), g.res.view(res.sizes()), g.post.view(post.sizes()),
            g.y.view(y.sizes())};
  }
};

// The fused kernels handle CPU float and double; anything else takes the composed ops.
bool fused_kernels_apply(const torch::Tensor& x, StreamOps ops) {
  return ops == StreamOps::kFused && x.device().is_cpu() &&
         (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble);
}

}  // namespace

torch::Tensor stream_projection(const torch::Tensor& x, const torch::Tensor& weight, int64_t count,
                                double eps, StreamOps ops) {
  // No projections (a router whose weights do not depend on the token): an empty (..., 0) view.
  if (weight.size(0) == 0) return x.select(-1, 0).narrow(-1, 0, 0);
  if (fused_kernels_apply(x, ops)) return StreamProjection::apply(x, weight, count, eps);
  auto inv_rms = (x.pow(2).sum({-2, -1}) / static_cast<double>(count) + eps).rsqrt();
  return torch::matmul(x.flatten(-2), weight.t()) * inv_rms.unsqueeze(-1);
}

torch::Tensor stream_read(const torch::Tensor& x, const torch::Tensor& pre, StreamOps ops) {
  if (fused_kernels_apply(x, ops)) return StreamRead::apply(x, pre);
  // (..., 1, k) @ (..., k, d): one small batched GEMM per token.
  return torch::matmul(pre.unsqueeze(-2), x).squeeze(-2);
}

torch::Tensor stream_write(const torch::Tensor& x, const torch::Tensor& res,
                           const torch::Tensor& post, const torch::Tensor& y, StreamOps ops) {
  if (fused_kernels_apply(x, ops)) return StreamWrite::apply(x, res, post, y);
  return torch::matmul(res, x) + post.unsqueeze(-1) * y.unsqueeze(-2);
}

}  // namespace shc
