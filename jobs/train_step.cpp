#include "jobs/train_step.h"

#include <torch/torch.h>

#include <stdexcept>

#include "core/precision.h"

namespace shc::jobs {

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  throw std::invalid_argument("train.precision must be fp32 or bf16, got '" + name + "'");
}

std::unique_ptr<torch::optim::AdamW> make_adamw(torch::nn::Module& model, const AdamWSettings& s) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : model.named_parameters()) named.emplace_back(item.key(), item.value());
  return make_adamw(named, s);
}

std::unique_ptr<torch::optim::AdamW> make_adamw(
    const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters,
    const AdamWSettings& s) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& [name, p] : named_parameters) {
    (is_decayed_parameter(name, p) ? decay : no_decay).push_back(p);
  }
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(s.lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, options(s.weight_decay));
  groups.emplace_back(no_decay, options(0.0));
  return std::make_unique<torch::optim::AdamW>(groups);
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
}

double accumulate_gradients(const MicroBatchLoss& loss_of, const torch::Tensor& batch,
                            int64_t micro_batch, Precision precision,
                            const std::function<void(bool last)>& before_backward,
                            const std::function<void(int64_t first_row)>& before_forward) {
  const int64_t rows = batch.size(0);
  if (micro_batch < 1 || rows % micro_batch != 0) {
    throw std::invalid_argument("batch of " + std::to_string(rows) +
                                " sequences does not split into micro-batches of " +
                                std::to_string(micro_batch));
  }
  const int64_t steps = rows / micro_batch;
  torch::Tensor loss_sum;  // on the loss's device: one host sync per step, not per micro-batch
  for (int64_t i = 0; i < steps; ++i) {
    auto ids = batch.narrow(0, i * micro_batch, micro_batch);
    if (before_forward) before_forward(i * micro_batch);
    torch::Tensor loss;
    {
      AutocastScope autocast(precision == Precision::kBf16, ids.device().type());
      loss = loss_of(ids);
    }
    if (before_backward) before_backward(i + 1 == steps);
    (loss / double(steps)).backward();
    const auto value = loss.detach().to(torch::kDouble);
    loss_sum = loss_sum.defined() ? loss_sum + value : value;
  }
  return loss_sum.item<double>() / double(steps);
}

double accumulate_gradients(SHCTransformer& model, const torch::Tensor& batch, int64_t micro_batch,
                            Precision precision,
                            const std::function<void(bool last)>& before_backward) {
  return accumulate_gradients([&](const torch::Tensor& ids) { return model->forward(ids, ids); },
                              batch, micro_batch, precision, before_backward);
}

}  // namespace shc::jobs
