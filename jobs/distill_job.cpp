// `shc distill --distill.teacher PATH --data.train GLOB ...`: trains an SSMStudent (core/
// ssm_student.h) to imitate a frozen SHC teacher (jobs/distillation.h) through the one training
// loop (jobs/trainer.h): the same data loader, DDP/FSDP/hybrid, checkpoints, resume, preemption,
// metrics (`kl` and `ce` per step, `hidden_mse` with the hidden-state term) and logs as
// `shc train`. The student's checkpoints record the
// model family "ssm_student".
//
// The teacher is replicated on every rank, never sharded: it is frozen, so it has neither
// gradients nor optimizer state, and its forward runs under no_grad, so it costs 4 bytes per
// parameter per rank and saves no activations; sharding it would add an all-gather per unit per
// micro-batch to save that memory.
#include <torch/torch.h>

#include <boost/log/trivial.hpp>

#include "core/ssm_student.h"
#include "jobs/distill_student.h"
#include "jobs/distillation.h"
#include "jobs/job.h"
#include "jobs/job_helpers.h"
#include "jobs/model_files.h"
#include "jobs/model_options.h"
#include "jobs/trainer.h"
#include "parallel/runtime.h"
#include "parallel/ssm_units.h"

namespace shc::jobs {
namespace {

class DistillJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    add_trainer_options(options);
    po::options_description distill("distill options", kHelpLineLength, kHelpLineLength / 2);
    // clang-format off
    distill.add_options()
        ("distill.teacher", po::value<std::string>()->required()->value_name("PATH"),
         "the teacher: a checkpoint directory, a run directory (its latest) or an export of an "
         "SHC transformer; frozen, replicated on every rank")
        ("distill.temperature", po::value<double>()->default_value(2.0),
         "softmax temperature T of both distributions in the KL term (scaled by T^2)")
        ("distill.alpha_kd", po::value<double>()->default_value(1.0),
         "weight of the per-token KL(teacher || student)")
        ("distill.alpha_ce", po::value<double>()->default_value(0.5),
         "weight of the student's next-token cross entropy on the data")
        ("distill.alpha_hidden", po::value<double>()->default_value(0.0),
         "weight of the MSE between the student's final hidden states, through a learned "
         "projection (hidden_projection.weight), and the teacher's (0 = off)");
    po::options_description student("student options (an SSMStudent shaped like the teacher: its "
                                    "vocab, hidden size and depth)",
                                    kHelpLineLength, kHelpLineLength / 2);
    student.add_options()
        ("student.n_layers", po::value<int64_t>()->default_value(0),
         "Mamba blocks (0 = the teacher's number of layers)")
        ("student.state_dim", po::value<int64_t>()->default_value(16), "SSM state size N")
        ("student.expand", po::value<int64_t>()->default_value(2), "d_inner = expand * d")
        ("student.conv_kernel", po::value<int64_t>()->default_value(4),
         "width of the causal depthwise convolution");
    // clang-format on
    options.add(distill).add(student);
  }

  int run(const po::variables_map& vm) override {
    const TrainerOptions options = trainer_options_from(vm);
    const std::string teacher_path = vm["distill.teacher"].as<std::string>();
    // Every rank distils from the checkpoint rank 0 resolved (the teacher's run may still write).
    const StoredModel stored =
        read_agreed_stored_model(teacher_path, parallel::Runtime::instance());
    SHCTransformer teacher = load_transformer(stored);
    teacher->to(parallel::Runtime::instance().device());
    teacher->eval();
    for (auto& p : teacher->parameters()) p.set_requires_grad(false);

    SSMConfig cfg = SSMConfig::from_teacher_config(teacher->config());
    if (const auto n = vm["student.n_layers"].as<int64_t>(); n > 0) cfg.n_layers = n;
    cfg.state_dim = vm["student.state_dim"].as<int64_t>();
    cfg.expand = vm["student.expand"].as<int64_t>();
    cfg.conv_kernel = vm["student.conv_kernel"].as<int64_t>();
    cfg.validate();
    const double temperature = vm["distill.temperature"].as<double>();
    const double alpha_kd = vm["distill.alpha_kd"].as<double>();
    const double alpha_ce = vm["distill.alpha_ce"].as<double>();
    const double alpha_hidden = vm["distill.alpha_hidden"].as<double>();
    if (temperature <= 0 || alpha_kd < 0 || alpha_ce < 0 || alpha_hidden < 0 ||
        alpha_kd + alpha_ce + alpha_hidden <= 0) {
      throw std::invalid_argument(
          "distill.temperature must be positive and distill.alpha_kd, distill.alpha_ce, "
          "distill.alpha_hidden non-negative with a positive sum");
    }
    BOOST_LOG_TRIVIAL(info) << "teacher " << teacher_path << " (step " << stored.step << ", "
                            << teacher->config().summary() << ", " << teacher->num_parameters()
                            << " parameters, frozen, replicated on every rank)";

    TrainingTask task;
    task.model_family = "ssm_student";
    task.model_config = ssm_config_to_json(cfg);
    task.model_summary = cfg.summary();
    task.vocab_size = cfg.vocab_size;
    // The student has no position limit; the teacher must see every training sequence whole.
    task.max_seq_len = teacher->config().max_seq_len;
    task.expected_tokenizer = stored.tokenizer;
    const int64_t vocab = cfg.vocab_size, teacher_hidden = teacher->config().hidden_dim;
    task.build = alpha_hidden > 0 ? StudentWithHiddenProjection::builder(cfg, teacher_hidden)
                                  : parallel::SSMUnits::builder(cfg);
    task.loss = [=](const Forward& forward, const torch::Tensor& ids) mutable {
      const auto out = forward(ids);
      // The teacher's logits, and its final hidden states when the hidden term is on.
      torch::Tensor teacher_logits, teacher_states;
      {
        torch::NoGradGuard no_grad;
        auto x = ids;
        for (int64_t u = 0; u + 1 < teacher->num_units(); ++u) x = teacher->run_unit(u, x);
        teacher_logits = teacher->head(x);
        if (alpha_hidden > 0) teacher_states = teacher->final_hidden(x);
      }
      if (alpha_hidden == 0) {
        const auto d = distillation_loss(out, teacher_logits, ids, temperature, alpha_kd, alpha_ce);
        return MicroBatchResult{d.loss, {{"kl", d.kl}, {"ce", d.ce}}};
      }
      // StudentWithHiddenProjection's output: [logits | projected hidden states].
      const HiddenStates hidden{out.narrow(-1, vocab, teacher_hidden), teacher_states,
                                alpha_hidden};
      const auto d = distillation_loss(out.narrow(-1, 0, vocab), teacher_logits, ids, temperature,
                                       alpha_kd, alpha_ce, &hidden);
      return MicroBatchResult{d.loss, {{"kl", d.kl}, {"ce", d.ce}, {"hidden_mse", d.hidden_mse}}};
    };
    task.resolved_config = options_to_json(vm);
    return train(options, task);
  }
};

SHC_REGISTER_JOB(DistillJob, "distill",
                 "distil a trained SHC teacher into an SSM student (same trainer, data, "
                 "checkpoints and parallelism as train)");

}  // namespace
}  // namespace shc::jobs
