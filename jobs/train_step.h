// The pieces of one optimizer step (jobs/trainer.h runs them; tests and benchmarks use them alone):
// the AdamW parameter groups, mixed precision, and gradient accumulation over micro-batches.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/adamw.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/transformer.h"

namespace shc::jobs {

enum class Precision { kFp32, kBf16 };
Precision parse_precision(const std::string& name);  // "fp32" | "bf16", else invalid_argument

struct AdamWSettings {
  double lr = 3e-4;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
};

// AdamW with weight decay on matrices only (shc::is_decayed_parameter). Group 0 decays, group 1
// does not.
std::unique_ptr<torch::optim::AdamW> make_adamw(
    const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters,
    const AdamWSettings& s);
std::unique_ptr<torch::optim::AdamW> make_adamw(torch::nn::Module& model, const AdamWSettings& s);
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

// The loss of one micro-batch (rows of seq_len + 1 tokens), e.g. the model's shifted cross
// entropy, or a sharded runtime's forward.
using MicroBatchLoss = std::function<torch::Tensor(const torch::Tensor& ids)>;

// Forward and backward over `batch` (rows of seq_len + 1 tokens) in micro-batches of
// `micro_batch` rows. Each micro-batch loss is divided by the number of micro-batches, so the
// accumulated gradient is that of the mean loss over the whole batch (equal micro-batches).
// Returns that mean loss. Gradients are added to whatever .grad already holds.
// `before_backward(last)` runs before each micro-batch's backward, `last` for the final one (data
// parallelism reduces gradients only then). `before_forward(first_row)` runs before each
// micro-batch's forward with the index of its first row in `batch` (the trainer keys the rank
// selector's Gumbel noise by the rows' global sequence indices).
double accumulate_gradients(const MicroBatchLoss& loss_of, const torch::Tensor& batch,
                            int64_t micro_batch, Precision precision,
                            const std::function<void(bool last)>& before_backward = {},
                            const std::function<void(int64_t first_row)>& before_forward = {});
// The same with the model's own loss, model->forward(ids, ids).
double accumulate_gradients(SHCTransformer& model, const torch::Tensor& batch, int64_t micro_batch,
                            Precision precision,
                            const std::function<void(bool last)>& before_backward = {});

}  // namespace shc::jobs
