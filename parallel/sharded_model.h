// A model as a sharded runtime sees it (SPEC §5): a sequence of units, run one after the other,
// unit u's output being unit u + 1's input. Each unit owns some parameters; FSDP keeps a flat
// shard of each unit and gathers the unit only while it runs (parallel/fsdp.h). The transformer
// implements it in parallel/transformer_units.h; a student model or a model built with the
// library API implements the same functions to be sharded the same way.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace shc::parallel {

using NamedParameters = std::vector<std::pair<std::string, torch::Tensor>>;

class ShardedModel {
 public:
  virtual ~ShardedModel() = default;

  virtual int64_t num_units() const = 0;
  // The parameters unit u owns, named uniquely within the model (names decide weight decay,
  // core/transformer.h is_decayed_parameter). Every parameter is owned by exactly one unit.
  virtual NamedParameters unit_parameters(int64_t u) const = 0;
  // Units whose parameters unit u uses besides its own (tied weights, e.g. an LM head that is the
  // embedding): gathered while u runs, and u's gradient for them is reduced into their shards.
  virtual std::vector<int64_t> borrowed_units(int64_t u) const {
    (void)u;
    return {};
  }
  // Runs unit u on the previous unit's output (unit 0: the token ids); the last unit returns the
  // logits.
  virtual torch::Tensor run_unit(int64_t u, const torch::Tensor& input) = 0;
  // Training or evaluation behaviour (torch::nn::Module::train), e.g. whether a rank selector
  // draws Gumbel noise.
  virtual void set_training(bool training) = 0;
  // Moves the whole model to `device` (a replicated runtime; a sharded one moves only shards).
  virtual void to(const torch::Device& device) = 0;
};

// What a builder calls once unit u exists and is initialised, with its parameters: the runtime
// keeps its shard and frees them, so no rank ever holds more than one unit in full.
using UnitBuilt = std::function<void(int64_t u, const NamedParameters& parameters)>;
// Builds a model unit by unit, calling UnitBuilt after each unit in the order 0, 1, ...
using ShardedModelBuilder = std::function<std::shared_ptr<ShardedModel>(const UnitBuilt&)>;

}  // namespace shc::parallel
