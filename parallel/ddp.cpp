#include "parallel/ddp.h"

#include <torch/torch.h>

#include <chrono>
#include <stdexcept>
#include <string>

namespace shc::parallel {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

DistributedDataParallel::DistributedDataParallel(std::vector<torch::Tensor> parameters,
                                                 Communicator& comm, double bucket_mb)
    : parameters_(std::move(parameters)), comm_(comm) {
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
  handoff_ = make_stream_handoff(comm_.device(), buckets_.size());
  for (size_t k = 0; k < parameters_.size(); ++k) {
    hooks_.push_back(parameters_[k].register_hook(
        [this, k](const torch::Tensor& grad) { on_gradient(k, grad); }));
  }
  thread_ = std::thread([this] { communication_loop(); });
}

DistributedDataParallel::~DistributedDataParallel() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  queue_cv_.notify_all();
  thread_.join();
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
  if (--b.pending == 0) {
    handoff_->produced(bucket_of_[k]);
    launch_ready();
  }
}

void DistributedDataParallel::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    queue_.push_back(next_launch_++);
  }
  queue_cv_.notify_one();
}

void DistributedDataParallel::communication_loop() {
  for (;;) {
    size_t bucket;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      queue_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      bucket = queue_.front();
      queue_.pop_front();
    }
    const auto start = std::chrono::steady_clock::now();
    try {
      handoff_->communicate(bucket,
                            [&] { comm_.all_reduce(buckets_[bucket].flat, ReduceOp::kAvg); });
    } catch (...) {
      // This thread's group is now out of step with the peers': it reduces nothing more.
      {
        std::lock_guard<std::mutex> lock(mutex_);
        failure_ = std::current_exception();
      }
      done_cv_.notify_all();
      return;
    }
    const double seconds = seconds_since(start);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      comm_seconds_ += seconds;
      buckets_[bucket].done = true;
    }
    done_cv_.notify_all();
  }
}

void DistributedDataParallel::finish_gradient_sync() {
  const auto start = std::chrono::steady_clock::now();
  {
    std::unique_lock<std::mutex> lock(mutex_);
    // The backward is over, so .grad holds every gradient of this step: a bucket still waiting
    // for one (an unused parameter) is filled from .grad, then it and all after it are queued in
    // order.
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
      handoff_->produced(i);
      b.pending = 0;
    }
    launch_ready();
    done_cv_.wait(lock, [this] {
      if (failure_) return true;
      for (const auto& b : buckets_) {
        if (!b.done) return false;
      }
      return true;
    });
    if (failure_) std::rethrow_exception(failure_);
  }
  wait_seconds_ += seconds_since(start);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    auto& b = buckets_[i];
    handoff_->consumed(i);
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
    b.done = false;
  }
  next_launch_ = 0;
}

}  // namespace shc::parallel
