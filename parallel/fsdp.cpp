#include "parallel/fsdp.h"

#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cmath>

#include "core/precision.h"
#include "core/transformer.h"
#include "parallel/unit_scopes.h"

namespace shc::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// One unit: forward without saved activations, backward by recomputation. The unit's shard is an
// input only so that autograd calls backward() for every unit, unit 0 (integer ids) included; its
// gradient arrives through the reduce-scatter instead.
struct UnitFunction : public torch::autograd::Function<UnitFunction> {
  // `keep_gathered` (ZeRO-2) is decided by the caller: inside forward() grad mode is always off.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& shard, int64_t unit, int64_t owner,
                               bool keep_gathered) {
    (void)shard;
    auto* fsdp = reinterpret_cast<FullyShardedDataParallel*>(owner);
    ctx->save_for_backward({x});
    ctx->saved_data["unit"] = unit;
    ctx->saved_data["owner"] = owner;
    // The recomputation must draw the same random numbers (the rank selector's Gumbel noise)
    // on the unit's device and use the same precision as this forward.
    ctx->saved_data["rng"] = generator_state(x.device());
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(x.device().type());
    return fsdp->unit_forward(unit, x, keep_gathered);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto* fsdp = reinterpret_cast<FullyShardedDataParallel*>(ctx->saved_data["owner"].toInt());
    auto x = ctx->get_saved_variables()[0];
    auto grad_x = fsdp->unit_backward(ctx->saved_data["unit"].toInt(), x, grad_out[0],
                                      ctx->saved_data["rng"].toTensor(),
                                      ctx->saved_data["autocast"].toBool());
    return {grad_x, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

FullyShardedDataParallel::FullyShardedDataParallel(std::shared_ptr<ShardedModel> model,
                                                   Communicator& shard_comm,
                                                   Communicator* replica_comm, Options options)
    : FullyShardedDataParallel(
          [model](const UnitBuilt& on_unit) {
            for (int64_t u = 0; u < model->num_units(); ++u) on_unit(u, model->unit_parameters(u));
            return model;
          },
          shard_comm, replica_comm, options, /*from_rank0=*/true) {}

FullyShardedDataParallel::FullyShardedDataParallel(const ShardedModelBuilder& build,
                                                   Communicator& shard_comm,
                                                   Communicator* replica_comm, Options options)
    : FullyShardedDataParallel(build, shard_comm, replica_comm, options, /*from_rank0=*/false) {}

FullyShardedDataParallel::FullyShardedDataParallel(const ShardedModelBuilder& build,
                                                   Communicator& shard_comm,
                                                   Communicator* replica_comm, Options options,
                                                   bool from_rank0)
    : shard_comm_(shard_comm),
      replica_comm_(replica_comm && replica_comm->size() > 1 ? replica_comm : nullptr),
      options_(options),
      comm_thread_(std::make_unique<CommunicationThread>(shard_comm.split(0, shard_comm.rank()))) {
  model_ = build([this, from_rank0](int64_t u, const NamedParameters& parameters) {
    shard_unit(u, parameters, from_rank0);
  });
  TORCH_CHECK(model_->num_units() == num_units(), "the builder reported ", num_units(),
              " units of a model with ", model_->num_units());
  for (int64_t u = 0; u < num_units(); ++u) units_[u].borrowed = model_->borrowed_units(u);
}

FullyShardedDataParallel::~FullyShardedDataParallel() = default;

void FullyShardedDataParallel::shard_unit(int64_t u, const NamedParameters& parameters,
                                          bool from_rank0) {
  TORCH_CHECK(u == num_units(), "units must be built in order: got unit ", u, " after ",
              num_units());
  torch::NoGradGuard no_grad;
  const int64_t n = shard_comm_.size();
  auto& unit = units_.emplace_back();
  // Master weights keep the model's dtype (fp32 normally; fp64 in exactness tests).
  unit.dtype = parameters.empty() ? torch::kFloat : parameters[0].second.scalar_type();
  for (const auto& [name, p] : parameters) {
    TORCH_CHECK(p.scalar_type() == unit.dtype, "unit ", u, " mixes dtypes (", name, ")");
    unit.params.push_back(p);
    unit.names.push_back(name);
    unit.shapes.push_back(p.sizes().vec());
    unit.numels.push_back(p.numel());
    unit.offsets.push_back(unit.numel);
    unit.numel += p.numel();
  }
  // Pad to a multiple of the group size: every rank's shard has the same length.
  unit.padded = (unit.numel + n - 1) / n * n;
  const int64_t len = unit.padded / n, start = shard_comm_.rank() * len;
  auto shard = shard_comm_.zeros(len, unit.dtype);
  auto& runs = decayed_runs_.emplace_back();
  for (const auto& run : shard_runs(u)) {
    const auto& p = unit.params[run.parameter];
    shard.narrow(0, run.shard_offset, run.numel)
        .copy_(p.reshape({-1}).narrow(0, run.parameter_offset, run.numel));
    if (is_decayed_parameter(run.name, p)) runs.emplace_back(run.shard_offset, run.numel);
  }
  if (from_rank0) {
    // Every rank starts from rank 0's parameters: its shard r goes to rank r of each group.
    auto flat = shard_comm_.zeros(unit.padded, unit.dtype);
    for (size_t k = 0; k < unit.params.size(); ++k) {
      flat.narrow(0, unit.offsets[k], unit.numels[k]).copy_(unit.params[k].reshape({-1}));
    }
    shard_comm_.broadcast(flat, 0);
    if (replica_comm_) replica_comm_->broadcast(flat, 0);
    shard.copy_(flat.narrow(0, start, len));
  }
  release(unit);  // the builder's copy is no longer needed
  shards_.push_back(shard.requires_grad_(true));
}

void FullyShardedDataParallel::prefetch(int64_t u) {
  auto& unit = units_[u];
  if (unit.full.defined()) return;
  unit.full = shard_comm_.empty(unit.padded, unit.dtype);
  const auto shard = shards_[u].detach(), full = unit.full;
  unit.gathering = comm_thread_->submit(
      {shard, full}, [shard, full](Communicator& comm) { comm.all_gather(shard, full); });
}

void FullyShardedDataParallel::gather_now(int64_t u) {
  prefetch(u);
  auto& unit = units_[u];
  if (!unit.gathering.valid()) return;  // already in the parameters
  unit.gathering.wait();
  unit.gathering = CommunicationThread::Handle();
  for (size_t k = 0; k < unit.params.size(); ++k) {
    unit.params[k].set_data(
        unit.full.narrow(0, unit.offsets[k], unit.numels[k]).view(unit.shapes[k]));
  }
}

void FullyShardedDataParallel::acquire(int64_t u) {
  gather_now(u);
  for (int64_t b : units_[u].borrowed) gather_now(b);
}

void FullyShardedDataParallel::release(Unit& unit) {
  for (auto& p : unit.params) {
    p.set_data(torch::empty({0}, p.options().device(shard_comm_.device())));
  }
  unit.full = torch::Tensor();
}

void FullyShardedDataParallel::release_after_use(int64_t u) {
  if (!units_[u].held) release(units_[u]);
  for (int64_t b : units_[u].borrowed) {
    if (!units_[b].held) release(units_[b]);
  }
}

void FullyShardedDataParallel::reduce_gradients(int64_t owner,
                                                const std::vector<torch::Tensor>& grads) {
  auto& unit = units_[owner];
  auto flat = shard_comm_.zeros(unit.padded, unit.dtype);
  bool any = false;
  for (size_t k = 0; k < grads.size(); ++k) {
    if (!grads[k].defined()) continue;
    flat.narrow(0, unit.offsets[k], unit.numels[k]).copy_(grads[k].reshape({-1}));
    any = true;
  }
  if (!any) return;
  auto& shard = shards_[owner];
  if (!shard.grad().defined()) {
    shard.mutable_grad() = shard_comm_.zeros(shard.numel(), unit.dtype);
  }
  const auto grad = shard.grad(), part = shard_comm_.empty(shard.numel(), unit.dtype);
  reductions_.push_back(
      comm_thread_->submit({flat, part, grad}, [flat, part, grad](Communicator& comm) {
        comm.reduce_scatter(flat, part, ReduceOp::kAvg);
        torch::NoGradGuard no_grad;
        grad.add_(part);
      }));
}

void FullyShardedDataParallel::wait_for_reductions() {
  for (const auto& r : reductions_) r.wait();
  reductions_.clear();
}

torch::Tensor FullyShardedDataParallel::forward(const torch::Tensor& ids) {
  // ZeRO-2 keeps a unit gathered until its backward; evaluation has no backward.
  const bool keep_gathered = !options_.reshard_after_forward && torch::GradMode::is_enabled();
  const auto owner = reinterpret_cast<int64_t>(this);
  auto x = ids;
  for (int64_t u = 0; u < num_units(); ++u) {
    x = UnitFunction::apply(x, shards_[u], u, owner, keep_gathered);
  }
  return x;
}

torch::Tensor FullyShardedDataParallel::loss(const torch::Tensor& ids) {
  return next_token_loss(forward(ids), ids);
}

torch::Tensor FullyShardedDataParallel::unit_forward(int64_t u, const torch::Tensor& x,
                                                     bool keep_gathered) {
  acquire(u);
  if (u + 1 < num_units()) {
    prefetch(u + 1);  // overlaps this unit's compute
    for (int64_t b : units_[u + 1].borrowed) prefetch(b);
  }
  torch::Tensor y;
  {
    torch::NoGradGuard no_grad;
    AutocastCacheDisabled no_cache;
    y = model_->run_unit(u, x);
  }
  units_[u].held = keep_gathered;
  release_after_use(u);
  return y;
}

torch::Tensor FullyShardedDataParallel::unit_backward(int64_t u, const torch::Tensor& x,
                                                      const torch::Tensor& grad_y,
                                                      const torch::Tensor& rng_state,
                                                      bool autocast) {
  acquire(u);
  if (u > 0) {
    prefetch(u - 1);  // overlaps this unit's recompute and gradients
    for (int64_t b : units_[u - 1].borrowed) prefetch(b);
  }
  const bool differentiable_input = x.is_floating_point();
  auto input = differentiable_input ? x.detach().requires_grad_(true) : x;
  torch::Tensor y;
  {
    ReplayedRandomness replay(x.device(), rng_state);
    torch::AutoGradMode grad_mode(true);
    AutocastScope cast(autocast, x.device().type());
    AutocastCacheDisabled no_cache;
    y = model_->run_unit(u, input);
  }
  std::vector<torch::Tensor> inputs;
  if (differentiable_input) inputs.push_back(input);
  std::vector<int64_t> owners{u};
  owners.insert(owners.end(), units_[u].borrowed.begin(), units_[u].borrowed.end());
  for (int64_t o : owners)
    inputs.insert(inputs.end(), units_[o].params.begin(), units_[o].params.end());
  auto grads = torch::autograd::grad({y}, inputs, {grad_y}, /*retain_graph=*/false,
                                     /*create_graph=*/false, /*allow_unused=*/true);
  y = torch::Tensor();
  // The previous unit's reduce-scatters ran during this unit's compute; waiting for them before
  // queuing this unit's bounds the gradient buffers in flight to two units (FSDP2 does the same).
  wait_for_reductions();
  auto next = grads.begin() + (differentiable_input ? 1 : 0);
  for (int64_t o : owners) {
    const auto count = int64_t(units_[o].params.size());
    reduce_gradients(o, std::vector<torch::Tensor>(next, next + count));
    next += count;
  }
  units_[u].held = false;
  release_after_use(u);
  return differentiable_input ? grads[0] : torch::Tensor();
}

void FullyShardedDataParallel::finish_step() {
  wait_for_reductions();
  if (replica_comm_) {
    for (auto& shard : shards_) {
      if (!shard.grad().defined()) {
        shard.mutable_grad() = shard_comm_.zeros(shard.numel(), shard.scalar_type());
      }
      replica_comm_->all_reduce(shard.mutable_grad(), ReduceOp::kAvg);
    }
  }
}

void FullyShardedDataParallel::apply_weight_decay(double lr, double weight_decay) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < shards_.size(); ++i) {
    for (const auto& [start, length] : decayed_runs_[i]) {
      shards_[i].narrow(0, start, length).mul_(1 - lr * weight_decay);
    }
  }
}

double FullyShardedDataParallel::clip_grad_norm(double max_norm) {
  wait_for_reductions();
  torch::NoGradGuard no_grad;
  auto squares = shard_comm_.zeros(1, torch::kDouble);
  for (const auto& s : shards_) {
    if (s.grad().defined()) squares += s.grad().to(torch::kDouble).pow(2).sum();
  }
  // Shards are disjoint within the group. One host sync, after the reduction.
  shard_comm_.all_reduce(squares, ReduceOp::kSum);
  const double norm = std::sqrt(squares.item<double>());
  if (max_norm > 0 && std::isfinite(norm)) {
    // As torch::nn::utils::clip_grad_norm_: scale by max_norm / (norm + 1e-6) when below 1.
    const double scale = max_norm / (norm + 1e-6);
    if (scale < 1) {
      for (auto& s : shards_) {
        if (s.grad().defined()) s.mutable_grad().mul_(scale);
      }
    }
  }
  return norm;
}

void FullyShardedDataParallel::zero_grad() {
  wait_for_reductions();
  for (auto& s : shards_) {
    if (s.grad().defined()) {
      s.mutable_grad().zero_();
    } else {
      s.mutable_grad() = shard_comm_.zeros(s.numel(), s.scalar_type());
    }
  }
}

std::vector<FullyShardedDataParallel::ShardRun> FullyShardedDataParallel::shard_runs(
    int64_t u) const {
  const auto& unit = units_.at(u);
  const int64_t len = unit.padded / shard_comm_.size(), start = shard_comm_.rank() * len;
  std::vector<ShardRun> runs;
  for (size_t k = 0; k < unit.names.size(); ++k) {
    const int64_t begin = std::max(unit.offsets[k], start);
    const int64_t end = std::min(unit.offsets[k] + unit.numels[k], start + len);
    if (end <= begin) continue;
    runs.push_back({int64_t(k), unit.names[k], unit.shapes[k], begin - unit.offsets[k],
                    begin - start, end - begin});
  }
  return runs;
}

NamedParameters FullyShardedDataParallel::full_parameters() {
  NamedParameters out;
  for (int64_t u = 0; u < num_units(); ++u) {
    auto& unit = units_[u];
    const bool was_gathered = unit.full.defined();
    gather_now(u);
    for (size_t k = 0; k < unit.params.size(); ++k) {
      out.emplace_back(unit.names[k], unit.params[k].detach().clone());
    }
    if (!was_gathered) release(unit);
  }
  return out;
}

int64_t FullyShardedDataParallel::persistent_parameter_and_gradient_bytes() const {
  int64_t bytes = 0;
  for (const auto& s : shards_) {
    bytes += (s.numel() + (s.grad().defined() ? s.grad().numel() : 0)) * s.element_size();
  }
  for (const auto& u : units_) {
    for (const auto& p : u.params) bytes += p.numel() * p.element_size();  // 0 when released
  }
  return bytes;
}

int64_t FullyShardedDataParallel::total_numel() const {
  int64_t n = 0;
  for (const auto& u : units_) n += u.numel;
  return n;
}

int64_t FullyShardedDataParallel::total_padded_numel() const {
  int64_t n = 0;
  for (const auto& u : units_) n += u.padded;
  return n;
}

int64_t FullyShardedDataParallel::largest_unit_numel() const {
  int64_t n = 0;
  for (const auto& u : units_) n = std::max(n, u.numel);
  return n;
}

}  // namespace shc::parallel
