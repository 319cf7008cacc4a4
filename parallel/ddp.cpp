#include "parallel/ddp.h"

#include <torch/torch.h>

#include <stdexcept>
#include <string>

namespace shc::parallel {

DistributedDataParallel::DistributedDataParallel(std::vector<torch::Tensor> parameters,
                                                 Communicator& comm, double bucket_mb)
    : parameters_(std::move(parameters)), comm_(comm), thread_(comm.split(0, comm.rank())) {
  TORCH_CHECK(bucket_mb > 0, "parallel.bucket_mb must be positive");
  const double bucket_bytes = bucket_mb * 1024.0 * 1024.0;
  bucket_of_.resize(parameters_.size());
  slot_of_.resize(parameters_.size());
  // Reverse registration order: the last layers' gradients are ready first in backward.
  double bytes = bucket_bytes;
  for (size_t k = parameters_.size(); k-- > 0;) {
    const auto& p = parameters_[k];
    const bool same_kind =
        !buckets_.empty() &&
        parameters_[buckets_.back().params.back()].scalar_type() == p.scalar_type();
    if (p.device() != comm_.device()) {
      throw std::invalid_argument("DDP: parameter " + std::to_string(k) + " is on " +
                                  p.device().str() + ", but the communicator works on " +
                                  comm_.device().str() + "; move the model there first");
    }
    if (bytes >= bucket_bytes || !same_kind) {
      buckets_.push_back(Bucket{});
      bytes = 0;
    }
    auto& b = buckets_.back();
    bucket_of_[k] = buckets_.size() - 1;
    slot_of_[k] = b.params.size();
    b.offsets.push_back(b.params.empty() ? 0
                                         : b.offsets.back() + parameters_[b.params.back()].numel());
    b.params.push_back(k);
    bytes += double(p.numel() * p.element_size());
  }
  for (auto& b : buckets_) {
    const auto& last = parameters_[b.params.back()];
    b.flat = comm_.empty(b.offsets.back() + last.numel(), last.scalar_type());
    b.pending = b.params.size();
  }
  for (size_t k = 0; k < parameters_.size(); ++k) {
    hooks_.push_back(parameters_[k].register_hook(
        [this, k](const torch::Tensor& grad) { on_gradient(k, grad); }));
  }
}

DistributedDataParallel::~DistributedDataParallel() {
  for (size_t k = 0; k < parameters_.size(); ++k) parameters_[k].remove_hook(hooks_[k]);
}

void DistributedDataParallel::broadcast_parameters(int root) {
  torch::NoGradGuard no_grad;
  for (auto& p : parameters_) {
    auto data = p.detach();
    comm_.broadcast(data, root);
  }
}

void DistributedDataParallel::set_sync(bool sync) {
  sync_ = sync;
}

void DistributedDataParallel::on_gradient(size_t k, const torch::Tensor& grad) {
  if (!sync_) return;
  const auto& p = parameters_[k];
  auto& b = buckets_[bucket_of_[k]];
  auto slice = b.flat.narrow(0, b.offsets[slot_of_[k]], p.numel());
  {
    torch::NoGradGuard no_grad;
    // The hook sees this backward's gradient before it is added to .grad, which still holds
    // the micro-batches accumulated under no_sync: the bucket gets their sum.
    if (p.grad().defined()) {
      torch::add_out(slice, p.grad().reshape({-1}), grad.reshape({-1}));
    } else {
      slice.copy_(grad.reshape({-1}));
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (--b.pending == 0) launch_ready();
}

void DistributedDataParallel::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Bucket& b = buckets_[next_launch_++];
    // Submitted from the thread that wrote the bucket, so that on a GPU the side stream waits for
    // the kernels that wrote it.
    b.reduced = thread_.submit(
        {b.flat}, [flat = b.flat](Communicator& comm) { comm.all_reduce(flat, ReduceOp::kAvg); });
  }
}

void DistributedDataParallel::finish_gradient_sync() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    // The backward is over, so .grad holds every gradient of this step: a bucket still waiting
    // for one (an unused parameter) is filled from .grad, then it and all after it are submitted
    // in order.
    for (size_t i = next_launch_; i < buckets_.size(); ++i) {
      auto& b = buckets_[i];
      if (b.pending == 0) continue;
      torch::NoGradGuard no_grad;
      for (size_t s = 0; s < b.params.size(); ++s) {
        const auto& p = parameters_[b.params[s]];
        auto slice = b.flat.narrow(0, b.offsets[s], p.numel());
        if (p.grad().defined()) {
          slice.copy_(p.grad().reshape({-1}));
        } else {
          slice.zero_();
        }
      }
      b.pending = 0;
    }
    launch_ready();
  }
  // In bucket order; rethrows the communication thread's exception.
  for (auto& b : buckets_) b.reduced.wait();
  torch::NoGradGuard no_grad;
  for (auto& b : buckets_) {
    for (size_t s = 0; s < b.params.size(); ++s) {
      auto& p = parameters_[b.params[s]];
      auto reduced = b.flat.narrow(0, b.offsets[s], p.numel()).view_as(p);
      if (p.grad().defined()) {
        p.mutable_grad().copy_(reduced);
      } else {
        p.mutable_grad() = reduced.clone();
      }
    }
    b.pending = b.params.size();
    b.reduced = {};
  }
  next_launch_ = 0;
}

}  // namespace shc::parallel
