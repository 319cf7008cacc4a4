#include "stage_marks.h"

#include <torch/torch.h>

namespace shc {

const char* to_string(BlockStage stage) {
  switch (stage) {
    case BlockStage::kOutside:
      return "outside";
    case BlockStage::kRouting:
      return "routing";
    case BlockStage::kAttention:
      return "attention";
    case BlockStage::kFeedForward:
      return "ffn";
  }
  return "?";
}

namespace {

// An autograd identity: forward reports the boundary, backward reports it again as the gradient
// passes and hands the gradient on unchanged.
struct StageBoundary : public torch::autograd::Function<StageBoundary> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               StageObserver* observer, int64_t layer, int64_t from, int64_t to) {
    observer->on_stage_boundary(layer, BlockStage(from), BlockStage(to), /*backward=*/false, x);
    ctx->saved_data["observer"] = reinterpret_cast<int64_t>(observer);
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["from"] = from;
    ctx->saved_data["to"] = to;
    return x;  // autograd makes the returned input a view with this node as its grad_fn
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* observer = reinterpret_cast<StageObserver*>(ctx->saved_data["observer"].toInt());
    observer->on_stage_boundary(
        ctx->saved_data["layer"].toInt(), BlockStage(ctx->saved_data["from"].toInt()),
        BlockStage(ctx->saved_data["to"].toInt()), /*backward=*/true, grads[0]);
    return {grads[0], torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor stage_boundary(const torch::Tensor& x, StageObserver* observer, int64_t layer,
                             BlockStage from, BlockStage to) {
  if (observer == nullptr) return x;
  if (!x.requires_grad() || !torch::GradMode::is_enabled()) {
    observer->on_stage_boundary(layer, from, to, /*backward=*/false, x);
    return x;
  }
  return StageBoundary::apply(x, observer, layer, int64_t(from), int64_t(to));
}

}  // namespace shc
