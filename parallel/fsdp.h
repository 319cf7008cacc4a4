// Fully sharded data parallelism (SPEC §5; ZeRO-3, Rajbhandari et al. 2020): each unit of the
// model — the outer unit (embedding, tied LM head, stream reduction, final norm) and every block —
// keeps only a flat 1/N shard of its parameters, gradients and optimizer state on each of the N
// ranks of its shard group. A block's parameters are all-gathered right before it runs and freed
// right after; the block runs without saving activations, and its backward re-gathers the
// parameters, recomputes the block under autograd and reduce-scatters the parameter gradients
// (a torch::autograd::Function per block). With reshard_after_forward = false (ZeRO-2) the
// gathered parameters stay until the block's backward, saving the second all-gather. The outer
// unit is used at both ends of the model, so it stays gathered for the whole optimizer step.
// Hybrid sharding: shard within groups, and average the shards' gradients across the groups
// holding the same shard (replica communicator).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "core/transformer.h"
#include "parallel/communicator.h"

namespace shc::parallel {

class FullyShardedDataParallel {
 public:
  struct Options {
    bool reshard_after_forward = true;  // false = ZeRO-2
  };

  // Shards `model` in place: afterwards its own parameter tensors are empty except while a unit is
  // gathered. `shard_comm` holds the ranks sharing one copy; `replica_comm` (may be null) the
  // ranks holding the same shard in the other groups. Both must outlive this object and serve
  // only the calling thread.
  FullyShardedDataParallel(SHCTransformer model, Communicator& shard_comm,
                           Communicator* replica_comm, Options options);
  ~FullyShardedDataParallel();
  FullyShardedDataParallel(const FullyShardedDataParallel&) = delete;
  FullyShardedDataParallel& operator=(const FullyShardedDataParallel&) = delete;

  // Gathers the outer unit: call before the first micro-batch of a step (or an evaluation).
  void begin_step();
  // Mean next-token loss of one micro-batch, computed unit by unit (needs begin_step()).
  torch::Tensor loss(const torch::Tensor& ids);
  // After the last backward of a step: reduce-scatters the outer unit's gradients, averages every
  // shard gradient across replicas and frees the outer unit.
  void finish_step();
  // Frees the outer unit after forward-only use (evaluation under NoGradGuard).
  void end_evaluation();

  // The flat shards (in the model's dtype, fp32 normally) the optimizer updates, with their .grad
  // (one per unit).
  const std::vector<torch::Tensor>& shards() const { return shards_; }
  // Per shard: 1 where the element belongs to a decayed matrix ("*weight", >= 2 dims), else 0.
  // AdamW's decoupled decay must be applied with it (apply_weight_decay), the optimizer's own
  // weight_decay left at 0, because one flat shard mixes decayed and undecayed parameters.
  void apply_weight_decay(double lr, double weight_decay);
  // Global L2 norm of the gradient over all shards; scales the gradients to max_norm if larger
  // (max_norm <= 0: no clipping). Same value on every rank.
  double clip_grad_norm(double max_norm);
  void zero_grad();

  // The full parameters, gathered unit by unit, in the order of model->parameters() (clones; for
  // tests and exporting).
  std::vector<torch::Tensor> full_parameters();

  // Bytes this rank keeps between steps for parameters and gradients (shards incl. padding).
  int64_t persistent_parameter_and_gradient_bytes() const;
  // Elements of every unit before padding, and after padding to a multiple of the group size.
  int64_t total_numel() const;
  int64_t total_padded_numel() const;
  int64_t num_units() const { return int64_t(units_.size()); }

  // Used by the per-block autograd function.
  torch::Tensor block_forward(int64_t block, const torch::Tensor& x, bool keep_gathered);
  torch::Tensor block_backward(int64_t block, const torch::Tensor& x, const torch::Tensor& grad_y,
                               const torch::Tensor& rng_state, bool autocast);

 private:
  struct Unit {
    std::vector<torch::Tensor> params;  // the model's parameter variables
    std::vector<std::vector<int64_t>> shapes;
    std::vector<int64_t> numels;
    std::vector<int64_t> offsets;
    int64_t numel = 0, padded = 0;
    torch::Dtype dtype = torch::kFloat;
    torch::Tensor full;  // gathered flat parameters; undefined while freed
  };
  void gather(Unit& unit);
  void release(Unit& unit);
  // Flattens the gradients of `grads` (one per parameter, undefined = zero), reduce-scatters them
  // (mean over the shard group) and adds the result to shard `index`'s gradient.
  void reduce_gradients(int64_t index, const std::vector<torch::Tensor>& grads);

  SHCTransformer model_;
  Communicator& shard_comm_;
  Communicator* replica_comm_;
  Options options_;
  std::vector<Unit> units_;  // 0 = outer unit, 1 + i = block i
  std::vector<torch::Tensor> shards_, decay_masks_;
};

}  // namespace shc::parallel
