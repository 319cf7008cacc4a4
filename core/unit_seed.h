// Per-unit seeding of model construction: unit u of a model draws its initial values from the
// global CPU generator seeded with (a base seed drawn once, u), so a sharded runtime can build a
// model unit by unit (keeping a shard of each) and get the values of an uninterrupted build
// after the same torch::manual_seed. SHCTransformer and SSMStudent share it.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace shc {

// One 64-bit draw from the global CPU generator: the model's base seed.
uint64_t draw_base_seed();

// The global CPU generator seeded for one unit's construction; its state comes back afterwards,
// so the rest of the program sees one draw (the base seed) whatever the model's size.
class UnitSeedScope {
 public:
  UnitSeedScope(uint64_t base, int64_t unit);
  ~UnitSeedScope();
  UnitSeedScope(const UnitSeedScope&) = delete;
  UnitSeedScope& operator=(const UnitSeedScope&) = delete;

 private:
  at::Generator gen_;
  at::Tensor saved_;
};

// Runs `make`, one unit's construction, under UnitSeedScope(base, unit) and without autograd.
void build_unit(uint64_t base, int64_t unit, const std::function<void()>& make);

// A unit's parameters, named as in the model's named_parameters().
using UnitParameters = std::vector<std::pair<std::string, at::Tensor>>;
// Appends the parameters of `module` to `out`, their names prefixed with `prefix`.
void append_parameters(UnitParameters& out, const std::string& prefix,
                       const torch::nn::Module& module);

}  // namespace shc
