// What one rank puts into a checkpoint and fills from one (SPEC §7): its slices of the model's
// parameters and of the optimizer state, addressed at global shape so that any world size and
// strategy can load them, and its rank-local tensors (RNG states).
//
// Names: "model/<parameter>", "optimizer/exp_avg/<parameter>", "optimizer/exp_avg_sq/<parameter>"
// with the parameter names of ShardedModel::unit_parameters (= named_parameters()), so DDP, FSDP
// and hybrid checkpoints share one namespace and the optimizer state follows its parameter.
#pragma once

#include <torch/optim/adamw.h>
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "parallel/fsdp.h"
#include "parallel/sharded_model.h"

namespace shc::checkpoints {

// Elements [offset, offset + data.numel()) of the flattened tensor `name` of global `shape`.
// `data` is a 1-D view of live memory: saving reads it, loading writes into it.
struct TensorSlice {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  torch::Tensor data;
};

struct RankState {
  std::vector<TensorSlice> slices;
  // The same slices are held by `replicas` ranks (DDP: every rank; hybrid: one per shard group);
  // each saves the replica_index-th of `replicas` equal parts, so a save writes every byte once.
  int replicas = 1;
  int replica_index = 0;
  // Restored only into the same rank number: the CPU (and CUDA) generator states.
  std::vector<std::pair<std::string, torch::Tensor>> rank_tensors;
};

// Replicated parameters (DDP, or one process) with their AdamW state.
RankState replicated_state(const parallel::NamedParameters& parameters,
                           torch::optim::AdamW& optimizer, int rank, int world_size);
// FSDP / hybrid: this rank's shards and the AdamW state of each shard (laid out like it).
RankState sharded_state(const parallel::FullyShardedDataParallel& fsdp,
                        torch::optim::AdamW& optimizer);

// AdamW's step count: the largest over the parameters (LibTorch's AdamW skips a parameter without
// a gradient); 0 before the first step.
int64_t optimizer_step(torch::optim::AdamW& optimizer);
// Sets every parameter's step count (after loading the moments).
void set_optimizer_step(torch::optim::AdamW& optimizer, int64_t step);

// "rng/cpu" and, where CUDA is used, "rng/cuda": the generator states of this process.
std::vector<std::pair<std::string, torch::Tensor>> rng_states(const torch::Device& device);
void restore_rng_states(const std::vector<std::pair<std::string, torch::Tensor>>& states,
                        const torch::Device& device);

}  // namespace shc::checkpoints
