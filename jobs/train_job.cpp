// `shc train`: trains an SHCTransformer with the one training loop (jobs/trainer.h) on HDF5 token
// shards, single process or under mpirun/srun. This file only reads options and says what the
// model is: how to build it unit by unit, its loss (next-token cross entropy), and the rank
// selector's per-step settings.
#include <torch/torch.h>

#include <cmath>

#include "core/transformer.h"
#include "jobs/job.h"
#include "jobs/model_options.h"
#include "jobs/trainer.h"
#include "parallel/transformer_units.h"

namespace shc::jobs {
namespace {

class TrainJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    add_trainer_options(options);
    add_model_options(options);
  }

  int run(const po::variables_map& vm) override {
    const auto cfg = model_config_from(vm);
    const TrainerOptions options = trainer_options_from(vm);
    TrainingTask task;
    task.model_family = "shc_transformer";
    task.model_config = model_config_to_json(cfg);
    task.model_summary = cfg.summary();
    task.vocab_size = cfg.vocab_size;
    task.max_seq_len = cfg.max_seq_len;
    task.build = parallel::TransformerUnits::builder(cfg);
    task.loss = [](const Forward& forward, const torch::Tensor& ids) {
      return MicroBatchResult{next_token_loss(forward(ids), ids), {}};
    };
    // Random routing (the rank selector's and history's Gumbel noise) is keyed per sequence.
    if (cfg.adaptive_rank || (cfg.residual == ResidualKind::kHistory && cfg.history_tau > 0)) {
      const uint64_t seed = options.seed;
      task.before_micro_batch = [cfg, seed](parallel::ShardedModel& units,
                                            const MicroBatchInfo& at) {
        auto model = static_cast<parallel::TransformerUnits&>(units).model();
        // Exponential annealing of the rank selector's Gumbel temperature over the run (history's
        // temperature is fixed).
        const double progress =
            double(at.step - 1) / double(std::max<int64_t>(1, at.max_steps - 1));
        model->set_rank_temperature(cfg.rank_tau_start *
                                    std::pow(cfg.rank_tau_min / cfg.rank_tau_start, progress));
        // Gumbel noise keyed by global sequence, not by rank or micro-batch: any world size and
        // accumulation draws what one process would.
        model->set_gumbel_noise(GumbelNoiseKey{
            seed, at.step,
            torch::arange(at.first_sequence, at.first_sequence + at.rows, torch::kLong)});
      };
    }
    task.resolved_config = options_to_json(vm);
    return train(options, task);
  }
};

SHC_REGISTER_JOB(TrainJob, "train",
                 "train a model on HDF5 token shards (single process or mpirun/srun), with "
                 "checkpoints, resume and preemption");

}  // namespace
}  // namespace shc::jobs
