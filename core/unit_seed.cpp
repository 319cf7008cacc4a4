#include "unit_seed.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <mutex>

#include "splitmix.h"

namespace shc {

namespace {

// Well-spread seeds from (base, unit): the unit-th output of splitmix64 started at base.
uint64_t unit_seed(uint64_t base, int64_t unit) {
  return splitmix64_mix(base + kSplitmixGamma * uint64_t(unit + 1));
}

}  // namespace

uint64_t draw_base_seed() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
}

UnitSeedScope::UnitSeedScope(uint64_t base, int64_t unit)
    : gen_(at::detail::getDefaultCPUGenerator()) {
  std::lock_guard<std::mutex> lock(gen_.mutex());
  saved_ = gen_.get_state();
  gen_.set_current_seed(unit_seed(base, unit));
}

UnitSeedScope::~UnitSeedScope() {
  std::lock_guard<std::mutex> lock(gen_.mutex());
  gen_.set_state(saved_);
}

void build_unit(uint64_t base, int64_t unit, const std::function<void()>& make) {
  UnitSeedScope seed(base, unit);
  torch::NoGradGuard no_grad;
  make();
}

void append_parameters(UnitParameters& out, const std::string& prefix,
                       const torch::nn::Module& module) {
  for (const auto& item : module.named_parameters()) {
    out.emplace_back(prefix + item.key(), item.value());
  }
}

}  // namespace shc
