// Scopes an FSDP unit runs in (SPEC §5): the random numbers of its forward replayed in the backward
// recompute, and no autocast weight cache, so that neither survives the unit.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace shc::parallel {

// The state of the default generator of `device` (CPU or a CUDA device), read under its mutex.
at::Tensor generator_state(c10::Device device);

// Sets the default generator of `device` to `state` for the scope, then puts back the state it
// had. The generator's mutex is held only while a state is swapped, never across the scope: code
// inside (the rank selector's Gumbel noise) draws from the same generator and takes that mutex.
class ReplayedRandomness {
 public:
  ReplayedRandomness(c10::Device device, const at::Tensor& state);
  ~ReplayedRandomness();
  ReplayedRandomness(const ReplayedRandomness&) = delete;
  ReplayedRandomness& operator=(const ReplayedRandomness&) = delete;

 private:
  c10::Device device_;
  at::Tensor previous_;
};

// Autocast's weight cache off for the scope. The cache keeps the low-precision cast of leaf
// parameters until autocast exits: for gathered units, a bf16 copy of every unit for the whole
// forward, defeating the sharding. Whether it caches a parameter whose data FSDP swaps in and out
// is a heuristic of ATen's (LibTorch 2.11 happens not to); off, it never does.
class AutocastCacheDisabled {
 public:
  AutocastCacheDisabled();
  ~AutocastCacheDisabled();
  AutocastCacheDisabled(const AutocastCacheDisabled&) = delete;
  AutocastCacheDisabled& operator=(const AutocastCacheDisabled&) = delete;

 private:
  bool previous_;
};

}  // namespace shc::parallel
