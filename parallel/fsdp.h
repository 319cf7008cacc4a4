// Fully sharded data parallelism (SPEC §5; ZeRO-3, Rajbhandari et al. 2020; PyTorch FSDP2): a
// model given as a sequence of units (parallel/sharded_model.h: the embedding, each block, the
// head) keeps only a flat 1/N shard of each unit's parameters, gradients and optimizer state on
// each of the N ranks of its shard group. A unit is all-gathered right before it runs and freed
// right after; it runs without saving activations, and its backward re-gathers it, recomputes it
// under autograd and reduce-scatters its gradients (a torch::autograd::Function per unit). With
// reshard_after_forward = false (ZeRO-2) a unit stays gathered from its forward until its
// backward, which then needs no all-gather. A unit that borrows another's parameters (a tied LM
// head) gathers that unit too and reduces its gradient for them into that unit's shard.
//
// Overlap: all collectives run on a communication thread (parallel/communication_thread.h) with
// its own communicator: the next unit's all-gather is issued before the current unit computes
// (forward and backward), and a unit's reduce-scatter runs while the previous unit's backward
// computes. At most the running unit, the prefetched one and what they borrow are gathered.
//
// Initialisation: built from a ShardedModelBuilder, the model is constructed unit by unit and each
// unit is sharded and freed before the next exists, so no rank ever holds the whole model.
//
// Hybrid sharding: shard within groups, and average the shards' gradients across the groups
// holding the same shard (replica communicator).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "parallel/communication_thread.h"
#include "parallel/communicator.h"
#include "parallel/sharded_model.h"

namespace shc::parallel {

class FullyShardedDataParallel {
 public:
  struct Options {
    bool reshard_after_forward = true;  // false = ZeRO-2
  };

  // Shards a built model in place: afterwards its parameter tensors are empty except while their
  // unit is gathered. Every rank starts from rank 0's values. `shard_comm` holds the ranks sharing
  // one copy; `replica_comm` (may be null) the ranks holding the same shard in the other groups.
  // Both must outlive this object and serve only the calling thread.
  FullyShardedDataParallel(std::shared_ptr<ShardedModel> model, Communicator& shard_comm,
                           Communicator* replica_comm, Options options);
  // Builds the model unit by unit and shards each unit as soon as it exists: a rank's memory grows
  // by its shards plus about one unit. The builder must produce the same values on every rank (a
  // seeded construction); nothing is broadcast.
  FullyShardedDataParallel(const ShardedModelBuilder& build, Communicator& shard_comm,
                           Communicator* replica_comm, Options options);
  ~FullyShardedDataParallel();
  FullyShardedDataParallel(const FullyShardedDataParallel&) = delete;
  FullyShardedDataParallel& operator=(const FullyShardedDataParallel&) = delete;

  // The last unit's output (logits), computed unit by unit. Under grad mode its backward
  // reduce-scatters every unit's gradients into the shards' .grad (asynchronously: call
  // finish_step() before reading them).
  torch::Tensor forward(const torch::Tensor& ids);
  // Mean next-token loss of one micro-batch (core next_token_loss on forward(ids)).
  torch::Tensor loss(const torch::Tensor& ids);
  // After the last backward of a step: waits for the reduce-scatters and averages every shard
  // gradient across replicas.
  void finish_step();

  // The flat shards (in the model's dtype, fp32 normally) the optimizer updates, with their .grad
  // (one per unit).
  const std::vector<torch::Tensor>& shards() const { return shards_; }
  // AdamW's decoupled weight decay, p *= 1 - lr * weight_decay on the elements of decayed
  // matrices ("*weight", >= 2 dims): the optimizer's own weight_decay must be left at 0, because
  // one flat shard mixes decayed and undecayed parameters.
  void apply_weight_decay(double lr, double weight_decay);
  // Global L2 norm of the gradient over all shards; scales the gradients to max_norm if larger
  // (max_norm <= 0: no clipping). Same value on every rank.
  double clip_grad_norm(double max_norm);
  void zero_grad();

  // Where this rank's shard of unit u lies in the model: shard elements [shard_offset, shard_offset
  // + numel) hold elements [parameter_offset, parameter_offset + numel) of the flattened parameter
  // `name` of shape `shape` (padding belongs to no run). Checkpoints store the shards, and the
  // optimizer state laid out like them, at global shape through these runs.
  struct ShardRun {
    int64_t parameter = 0;  // index in the unit's parameters (ShardedModel::unit_parameters)
    std::string name;
    std::vector<int64_t> shape;
    int64_t parameter_offset = 0, shard_offset = 0, numel = 0;
  };
  std::vector<ShardRun> shard_runs(int64_t u) const;
  // The ranks that hold the same shards as this one (hybrid: one per shard group; fsdp: 1) and
  // this rank's index among them.
  int replica_count() const { return replica_comm_ ? replica_comm_->size() : 1; }
  int replica_index() const { return replica_comm_ ? replica_comm_->rank() : 0; }

  // The full parameters with their names, gathered unit by unit, in unit order (clones; for tests
  // and exporting).
  NamedParameters full_parameters();
  ShardedModel& model() { return *model_; }

  // Seconds the communication thread spent in collectives, and seconds the training thread waited
  // for them: 1 - wait / comm is the share of communication hidden behind computation.
  double comm_seconds() const { return comm_thread_->busy_seconds(); }
  double wait_seconds() const { return comm_thread_->waited_seconds(); }
  void reset_timers() { comm_thread_->reset_timers(); }

  // Bytes this rank keeps between steps for parameters and gradients (shards incl. padding).
  int64_t persistent_parameter_and_gradient_bytes() const;
  // Elements of every unit before padding, and after padding to a multiple of the group size.
  int64_t total_numel() const;
  int64_t total_padded_numel() const;
  // Elements of the largest unit (before padding).
  int64_t largest_unit_numel() const;
  int64_t num_units() const { return int64_t(units_.size()); }

  // Used by the per-unit autograd function.
  torch::Tensor unit_forward(int64_t u, const torch::Tensor& x, bool keep_gathered);
  torch::Tensor unit_backward(int64_t u, const torch::Tensor& x, const torch::Tensor& grad_y,
                              const torch::Tensor& rng_state, bool autocast);

 private:
  struct Unit {
    std::vector<torch::Tensor> params;  // the model's parameter variables
    std::vector<std::string> names;
    std::vector<std::vector<int64_t>> shapes;
    std::vector<int64_t> offsets, numels;
    std::vector<int64_t> borrowed;  // units whose parameters this one uses too
    int64_t numel = 0, padded = 0;
    torch::Dtype dtype = torch::kFloat;
    torch::Tensor full;                     // gathered flat parameters; undefined while freed
    CommunicationThread::Handle gathering;  // valid while the all-gather of `full` is in flight
    bool held = false;                      // ZeRO-2: gathered from forward until backward
  };
  FullyShardedDataParallel(const ShardedModelBuilder& build, Communicator& shard_comm,
                           Communicator* replica_comm, Options options, bool from_rank0);
  // Takes this rank's shard of unit u's `parameters` (rank 0's values when `from_rank0`) and
  // frees them.
  void shard_unit(int64_t u, const NamedParameters& parameters, bool from_rank0);
  // Queues the all-gather of unit u unless it is gathered or being gathered.
  void prefetch(int64_t u);
  // Unit u gathered and in the model's parameters.
  void gather_now(int64_t u);
  // Unit u and what it borrows gathered.
  void acquire(int64_t u);
  // Frees unit u and what it borrows, except units held for their backward (ZeRO-2).
  void release_after_use(int64_t u);
  void release(Unit& unit);
  // Flattens `grads` (one per parameter of unit `owner`, undefined = zero) and queues their
  // reduce-scatter (mean over the shard group), added to shard `owner`'s gradient.
  void reduce_gradients(int64_t owner, const std::vector<torch::Tensor>& grads);
  void wait_for_reductions();

  std::shared_ptr<ShardedModel> model_;
  Communicator& shard_comm_;
  Communicator* replica_comm_;
  Options options_;
  std::vector<Unit> units_;
  std::vector<torch::Tensor> shards_;
  // Per shard: the (start, length) runs of elements that belong to decayed matrices.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> decayed_runs_;
  std::unique_ptr<CommunicationThread> comm_thread_;
  std::vector<CommunicationThread::Handle> reductions_;  // queued reduce-scatters of this step
};

}  // namespace shc::parallel
