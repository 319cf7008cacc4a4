// Learning-rate schedule of the train job: linear warmup to the peak, then a cosine decay to
// min_lr_ratio * peak at max_steps (Loshchilov & Hutter 2017, as in GPT-3 / llm.c).
#pragma once

#include <cstdint>

namespace shc::jobs {

struct LrSchedule {
  double peak_lr = 3e-4;
  int64_t warmup_steps = 0;
  int64_t max_steps = 1;
  double min_lr_ratio = 0.1;

  // lr for optimizer step `step` (1-based): step / warmup * peak during warmup, then
  // min + (peak - min) * (1 + cos(pi * progress)) / 2 with progress = (step - warmup) /
  // (max_steps - warmup) in [0, 1]; steps past max_steps stay at the minimum.
  double at(int64_t step) const;
};

}  // namespace shc::jobs
