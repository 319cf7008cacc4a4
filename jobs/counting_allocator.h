// Live and peak bytes of every CPU tensor allocated while installed: the memory tests of FSDP
// (ZeRO-2 vs ZeRO-3, bf16 vs fp32) and `shc profile`'s memory per residual kind compare peaks
// within one process, which VmHWM cannot do (it never resets and includes LibTorch's own
// runtime). Installing it puts a mutex on every CPU allocation: measure time before installing.
#pragma once

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace shc::jobs {

class CountingCpuAllocator final : public c10::Allocator {
 public:
  // The allocator of every CPU tensor created from now on, for the rest of the process (tensors
  // made before keep their own deleter).
  static CountingCpuAllocator& install() {
    static CountingCpuAllocator* instance = [] {
      auto* a = new CountingCpuAllocator(c10::GetCPUAllocator());
      c10::SetCPUAllocator(a, /*priority=*/100);
      return a;
    }();
    return *instance;
  }

  int64_t live_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_;
  }
  int64_t peak_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return peak_;
  }
  // Restarts the peak at the bytes live now.
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    peak_ = live_;
  }

  // Simple data pointers (data == context), as raw_allocate() requires: the inner allocation
  // is kept in a table until the raw deleter frees it.
  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = inner_->allocate(n);
    void* data = inner.get();
    if (data == nullptr) return inner;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_ += int64_t(n);
      peak_ = std::max(peak_, live_);
      blocks_.emplace(data, Block{std::move(inner), int64_t(n)});
    }
    return {data, data, &release, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  struct Block {
    c10::DataPtr inner;
    int64_t bytes;
  };

  explicit CountingCpuAllocator(c10::Allocator* inner) : inner_(inner) {}

  static void release(void* data) {
    if (data == nullptr) return;
    auto& self = install();
    c10::DataPtr inner;  // freed after the lock is released
    std::lock_guard<std::mutex> lock(self.mutex_);
    auto it = self.blocks_.find(data);
    self.live_ -= it->second.bytes;
    inner = std::move(it->second.inner);
    self.blocks_.erase(it);
  }

  c10::Allocator* inner_;
  mutable std::mutex mutex_;
  int64_t live_ = 0, peak_ = 0;
  std::unordered_map<void*, Block> blocks_;
};

}  // namespace shc::jobs
