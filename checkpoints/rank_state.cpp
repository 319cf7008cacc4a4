#include "checkpoints/rank_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/torch.h>

#include <mutex>

namespace shc::checkpoints {
namespace {

// The AdamW state of `parameter`, created (zero moments, step 0) if no step has run yet: a
// checkpoint always holds both moments, so its content does not depend on when it was taken.
torch::optim::AdamWParamState& adamw_state(torch::optim::AdamW& optimizer,
                                           const torch::Tensor& parameter) {
  auto& state = optimizer.state()[parameter.unsafeGetTensorImpl()];
  if (!state) {
    auto fresh = std::make_unique<torch::optim::AdamWParamState>();
    fresh->exp_avg(torch::zeros_like(parameter, torch::MemoryFormat::Preserve));
    fresh->exp_avg_sq(torch::zeros_like(parameter, torch::MemoryFormat::Preserve));
    state = std::move(fresh);
  }
  return static_cast<torch::optim::AdamWParamState&>(*state);
}

void add_with_moments(RankState& out, torch::optim::AdamW& optimizer, const std::string& name,
                      const std::vector<int64_t>& shape, const torch::Tensor& parameter,
                      int64_t parameter_offset, int64_t offset_in_parameter_tensor, int64_t numel) {
  auto& state = adamw_state(optimizer, parameter);
  auto view = [&](const torch::Tensor& t) {
    return t.detach().view({-1}).narrow(0, offset_in_parameter_tensor, numel);
  };
  out.slices.push_back({"model/" + name, shape, parameter_offset, view(parameter)});
  out.slices.push_back(
      {"optimizer/exp_avg/" + name, shape, parameter_offset, view(state.exp_avg())});
  out.slices.push_back(
      {"optimizer/exp_avg_sq/" + name, shape, parameter_offset, view(state.exp_avg_sq())});
}

}  // namespace

RankState replicated_state(const parallel::NamedParameters& parameters,
                           torch::optim::AdamW& optimizer, int rank, int world_size) {
  RankState out;
  out.replicas = world_size;
  out.replica_index = rank;
  for (const auto& [name, p] : parameters) {
    add_with_moments(out, optimizer, name, p.sizes().vec(), p, 0, 0, p.numel());
  }
  return out;
}

RankState sharded_state(const parallel::FullyShardedDataParallel& fsdp,
                        torch::optim::AdamW& optimizer) {
  RankState out;
  out.replicas = fsdp.replica_count();
  out.replica_index = fsdp.replica_index();
  const auto& shards = fsdp.shards();
  for (int64_t u = 0; u < int64_t(shards.size()); ++u) {
    for (const auto& run : fsdp.shard_runs(u)) {
      add_with_moments(out, optimizer, run.name, run.shape, shards[u], run.parameter_offset,
                       run.shard_offset, run.numel);
    }
  }
  return out;
}

int64_t optimizer_step(torch::optim::AdamW& optimizer) {
  // The largest: a parameter that never had a gradient keeps the step of its state's creation.
  int64_t step = 0;
  for (const auto& [key, state] : optimizer.state()) {
    step = std::max(step, static_cast<const torch::optim::AdamWParamState&>(*state).step());
  }
  return step;
}

void set_optimizer_step(torch::optim::AdamW& optimizer, int64_t step) {
  for (auto& [key, state] : optimizer.state()) {
    static_cast<torch::optim::AdamWParamState&>(*state).step(step);
  }
}

namespace {

// The process's default generators by checkpoint name (a Generator is a shared handle).
std::vector<std::pair<std::string, at::Generator>> default_generators(const torch::Device& device) {
  std::vector<std::pair<std::string, at::Generator>> out;
  out.emplace_back("rng/cpu", at::detail::getDefaultCPUGenerator());
  if (device.is_cuda()) {
    out.emplace_back("rng/cuda",
                     at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, device.index())));
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> rng_states(const torch::Device& device) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [name, generator] : default_generators(device)) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    out.emplace_back(name, generator.get_state());
  }
  return out;
}

void restore_rng_states(const std::vector<std::pair<std::string, torch::Tensor>>& states,
                        const torch::Device& device) {
  for (auto& [name, generator] : default_generators(device)) {
    for (const auto& [saved_name, state] : states) {
      if (saved_name != name) continue;
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(state);
    }
  }
}

}  // namespace shc::checkpoints
