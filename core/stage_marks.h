// Where a block's time goes (`shc profile`): identity marks at the stage boundaries of
// SHCBlock::forward that report when the activations pass them in forward and when the gradient
// passes them in backward. An observer turns the reports into per-stage times (jobs/ times them;
// core only reports). Without an observer a mark is x itself: no op, no autograd node.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace shc {

// The parts of a block the profile separates. kRouting is everything of the hyper-connections
// (x~, coefficients, H_res, read, write, the rank selector); kAttention and kFeedForward are the
// sublayers with their pre-norms. kOutside is the model outside the blocks.
enum class BlockStage { kOutside = 0, kRouting = 1, kAttention = 2, kFeedForward = 3 };
constexpr int kNumBlockStages = 4;
const char* to_string(BlockStage stage);

class StageObserver {
 public:
  virtual ~StageObserver() = default;
  // The model crosses the boundary between `from` and `to` of block `layer` (`at`: the tensor
  // there). Forward (`backward` false): `from` ends and `to` begins. Backward (`backward` true,
  // called when the gradient of `at` has been fully accumulated and flows on): the backward of
  // `to` ends and that of `from` begins. On a GPU the work is asynchronous: an observer that
  // reads clocks synchronises first.
  virtual void on_stage_boundary(int64_t layer, BlockStage from, BlockStage to, bool backward,
                                 const torch::Tensor& at) = 0;
};

// x unchanged; reports the boundary to `observer` now and, if x takes part in autograd, when its
// gradient passes in backward. nullptr observer: returns x.
torch::Tensor stage_boundary(const torch::Tensor& x, StageObserver* observer, int64_t layer,
                             BlockStage from, BlockStage to);

}  // namespace shc
