#include "parallel/unit_scopes.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include <mutex>

namespace shc::parallel {

namespace {

at::Generator default_generator(c10::Device device) {
  return at::globalContext().defaultGenerator(device);
}

at::Tensor swap_state(c10::Device device, const at::Tensor& state) {
  auto gen = default_generator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  auto previous = gen.get_state();
  gen.set_state(state);
  return previous;
}

}  // namespace

at::Tensor generator_state(c10::Device device) {
  auto gen = default_generator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

ReplayedRandomness::ReplayedRandomness(c10::Device device, const at::Tensor& state)
    : device_(device), previous_(swap_state(device, state)) {}

ReplayedRandomness::~ReplayedRandomness() {
  swap_state(device_, previous_);
}

AutocastCacheDisabled::AutocastCacheDisabled()
    : previous_(at::autocast::is_autocast_cache_enabled()) {
  at::autocast::set_autocast_cache_enabled(false);
}

AutocastCacheDisabled::~AutocastCacheDisabled() {
  at::autocast::set_autocast_cache_enabled(previous_);
}

}  // namespace shc::parallel
