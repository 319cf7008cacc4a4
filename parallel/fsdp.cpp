#include "parallel/fsdp.h"

#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include <cmath>
#include <map>
#include <set>

#include "core/precision.h"
#include "parallel/unit_scopes.h"

namespace shc::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// One block, run as a unit: forward without saved activations, backward by recomputation.
struct BlockFunction : public torch::autograd::Function<BlockFunction> {
  // `keep_gathered` (ZeRO-2) is decided by the caller: inside forward() grad mode is always off.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t block,
                               int64_t owner, bool keep_gathered) {
    auto* fsdp = reinterpret_cast<FullyShardedDataParallel*>(owner);
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = block;
    ctx->saved_data["owner"] = owner;
    // The recomputation must draw the same random numbers (the rank selector's Gumbel noise)
    // on the block's device and use the same precision as this forward.
    ctx->saved_data["rng"] = generator_state(x.device());
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(x.device().type());
    return fsdp->block_forward(block, x, keep_gathered);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto* fsdp = reinterpret_cast<FullyShardedDataParallel*>(ctx->saved_data["owner"].toInt());
    auto x = ctx->get_saved_variables()[0];
    auto grad_x = fsdp->block_backward(ctx->saved_data["block"].toInt(), x, grad_out[0],
                                       ctx->saved_data["rng"].toTensor(),
                                       ctx->saved_data["autocast"].toBool());
    return {grad_x, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

FullyShardedDataParallel::FullyShardedDataParallel(SHCTransformer model, Communicator& shard_comm,
                                                   Communicator* replica_comm, Options options)
    : model_(std::move(model)),
      shard_comm_(shard_comm),
      replica_comm_(replica_comm && replica_comm->size() > 1 ? replica_comm : nullptr),
      options_(options) {
  const int64_t n = shard_comm_.size();
  // Units: every block, and the rest of the model (in registration order) as the outer unit.
  const int64_t blocks = int64_t(model_->block_list().size());
  units_.resize(1 + blocks);
  std::vector<std::vector<std::string>> names(units_.size());
  std::set<const void*> in_blocks;
  for (int64_t i = 0; i < blocks; ++i) {
    for (const auto& item : model_->block_list()[i]->named_parameters()) {
      units_[1 + i].params.push_back(item.value());
      names[1 + i].push_back(item.key());
      in_blocks.insert(item.value().unsafeGetTensorImpl());
    }
  }
  for (const auto& item : model_->named_parameters()) {
    if (in_blocks.count(item.value().unsafeGetTensorImpl())) continue;
    units_[0].params.push_back(item.value());
    names[0].push_back(item.key());
  }
  torch::NoGradGuard no_grad;
  for (size_t u = 0; u < units_.size(); ++u) {
    auto& unit = units_[u];
    std::vector<torch::Tensor> flat_parts, mask_parts;
    // Master weights keep the model's dtype (fp32 normally; fp64 in exactness tests).
    unit.dtype = unit.params.empty() ? torch::kFloat : unit.params[0].scalar_type();
    for (size_t k = 0; k < unit.params.size(); ++k) {
      const auto& p = unit.params[k];
      unit.shapes.push_back(p.sizes().vec());
      unit.numels.push_back(p.numel());
      unit.offsets.push_back(unit.numel);
      unit.numel += p.numel();
      flat_parts.push_back(p.detach().reshape({-1}).to(unit.dtype));
      mask_parts.push_back(
          torch::full({p.numel()}, is_decayed_parameter(names[u][k], p) ? 1.0 : 0.0, unit.dtype));
    }
    // Pad to a multiple of the group size: every rank's shard has the same length.
    unit.padded = (unit.numel + n - 1) / n * n;
    auto flat = shard_comm_.zeros(unit.padded, unit.dtype);
    auto mask = torch::zeros({unit.padded}, unit.dtype);
    flat.narrow(0, 0, unit.numel).copy_(torch::cat(flat_parts));
    mask.narrow(0, 0, unit.numel).copy_(torch::cat(mask_parts));
    // Every rank starts from rank 0's parameters.
    shard_comm_.broadcast(flat, 0);
    if (replica_comm_) replica_comm_->broadcast(flat, 0);
    const int64_t len = unit.padded / n, start = shard_comm_.rank() * len;
    auto shard = shard_comm_.empty(len, unit.dtype);
    shard.copy_(flat.narrow(0, start, len));
    shard.mutable_grad() = shard_comm_.zeros(len, unit.dtype);
    shards_.push_back(shard);
    decay_masks_.push_back(mask.narrow(0, start, len).clone());
    release(unit);
  }
}

FullyShardedDataParallel::~FullyShardedDataParallel() = default;

void FullyShardedDataParallel::gather(Unit& unit) {
  if (unit.full.defined()) return;
  const size_t index = &unit - units_.data();
  unit.full = shard_comm_.empty(unit.padded, unit.dtype);
  shard_comm_.all_gather(shards_[index], unit.full);
  for (size_t k = 0; k < unit.params.size(); ++k) {
    unit.params[k].set_data(
        unit.full.narrow(0, unit.offsets[k], unit.numels[k]).view(unit.shapes[k]));
  }
}

void FullyShardedDataParallel::release(Unit& unit) {
  for (auto& p : unit.params) p.set_data(torch::empty({0}, p.options()));
  unit.full = torch::Tensor();
}

void FullyShardedDataParallel::reduce_gradients(int64_t index,
                                                const std::vector<torch::Tensor>& grads) {
  auto& unit = units_[index];
  auto flat = shard_comm_.zeros(unit.padded, unit.dtype);
  for (size_t k = 0; k < grads.size(); ++k) {
    if (!grads[k].defined()) continue;
    flat.narrow(0, unit.offsets[k], grads[k].numel()).copy_(grads[k].reshape({-1}));
  }
  auto part = shard_comm_.empty(shards_[index].numel(), unit.dtype);
  shard_comm_.reduce_scatter(flat, part, ReduceOp::kAvg);
  auto& grad = shards_[index].mutable_grad();
  if (grad.defined()) {
    grad.add_(part);
  } else {
    grad = part;  // an optimizer's zero_grad() may have unset it
  }
}

void FullyShardedDataParallel::begin_step() {
  gather(units_[0]);
}

void FullyShardedDataParallel::end_evaluation() {
  release(units_[0]);
}

torch::Tensor FullyShardedDataParallel::loss(const torch::Tensor& ids) {
  TORCH_CHECK(units_[0].full.defined(), "FullyShardedDataParallel::loss needs begin_step()");
  auto s = model_->embed(ids);
  const auto owner = reinterpret_cast<int64_t>(this);
  // ZeRO-2 keeps a block gathered until its backward; evaluation has no backward.
  const bool keep_gathered = !options_.reshard_after_forward && torch::GradMode::is_enabled();
  for (int64_t i = 0; i + 1 < int64_t(units_.size()); ++i) {
    s = model_->between_blocks(BlockFunction::apply(s, i, owner, keep_gathered));
  }
  return next_token_loss(model_->head(s), ids);
}

torch::Tensor FullyShardedDataParallel::block_forward(int64_t block, const torch::Tensor& x,
                                                      bool keep_gathered) {
  auto& unit = units_[1 + block];
  gather(unit);
  torch::Tensor y;
  {
    torch::NoGradGuard no_grad;
    AutocastCacheDisabled no_cache;
    SHCBlock b = model_->block_list()[block];
    y = b->forward(x);
  }
  if (!keep_gathered) release(unit);
  return y;
}

torch::Tensor FullyShardedDataParallel::block_backward(int64_t block, const torch::Tensor& x,
                                                       const torch::Tensor& grad_y,
                                                       const torch::Tensor& rng_state,
                                                       bool autocast) {
  auto& unit = units_[1 + block];
  gather(unit);
  auto input = x.detach().requires_grad_(true);
  torch::Tensor y;
  {
    ReplayedRandomness replay(x.device(), rng_state);
    torch::AutoGradMode grad_mode(true);
    AutocastScope cast(autocast, x.device().type());
    AutocastCacheDisabled no_cache;
    SHCBlock b = model_->block_list()[block];
    y = b->forward(input);
  }
  std::vector<torch::Tensor> inputs{input};
  inputs.insert(inputs.end(), unit.params.begin(), unit.params.end());
  auto grads = torch::autograd::grad({y}, inputs, {grad_y}, /*retain_graph=*/false,
                                     /*create_graph=*/false, /*allow_unused=*/true);
  reduce_gradients(1 + block, std::vector<torch::Tensor>(grads.begin() + 1, grads.end()));
  release(unit);
  return grads[0];
}

void FullyShardedDataParallel::finish_step() {
  auto& outer = units_[0];
  if (outer.full.defined()) {
    std::vector<torch::Tensor> grads;
    bool any = false;
    for (auto& p : outer.params) {
      grads.push_back(p.grad());
      any |= p.grad().defined();
      p.mutable_grad() = torch::Tensor();
    }
    if (any) reduce_gradients(0, grads);
    release(outer);
  }
  if (replica_comm_) {
    for (auto& shard : shards_) {
      if (!shard.grad().defined())
        shard.mutable_grad() = shard_comm_.zeros(shard.numel(), shard.scalar_type());
      replica_comm_->all_reduce(shard.mutable_grad(), ReduceOp::kAvg);
    }
  }
}

void FullyShardedDataParallel::apply_weight_decay(double lr, double weight_decay) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < shards_.size(); ++i) {
    shards_[i].sub_(shards_[i] * decay_masks_[i] * (lr * weight_decay));
  }
}

double FullyShardedDataParallel::clip_grad_norm(double max_norm) {
  torch::NoGradGuard no_grad;
  auto local = torch::zeros({}, torch::dtype(torch::kDouble).device(shard_comm_.device()));
  for (const auto& s : shards_) {
    if (s.grad().defined()) local += s.grad().to(torch::kDouble).pow(2).sum();
  }
  // Shards are disjoint within the group.
  const double norm =
      std::sqrt(shard_comm_.all_reduce_scalar(local.item<double>(), ReduceOp::kSum));
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
  for (auto& s : shards_) {
    if (s.grad().defined()) {
      s.mutable_grad().zero_();
    } else {
      s.mutable_grad() = shard_comm_.zeros(s.numel(), s.scalar_type());
    }
  }
}

std::vector<torch::Tensor> FullyShardedDataParallel::full_parameters() {
  std::map<const void*, torch::Tensor> gathered;
  for (auto& unit : units_) {
    const bool was_gathered = unit.full.defined();
    gather(unit);
    for (const auto& p : unit.params) gathered[p.unsafeGetTensorImpl()] = p.detach().clone();
    if (!was_gathered) release(unit);
  }
  std::vector<torch::Tensor> out;
  for (const auto& p : model_->parameters()) out.push_back(gathered.at(p.unsafeGetTensorImpl()));
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

}  // namespace shc::parallel
