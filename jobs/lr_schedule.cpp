#include "lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace shc::jobs {

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps) {
    return peak_lr * double(step) / double(warmup_steps);
  }
  const double min_lr = peak_lr * min_lr_ratio;
  const int64_t decay_steps = max_steps - warmup_steps;
  if (decay_steps <= 0) return peak_lr;
  const double progress = std::clamp(double(step - warmup_steps) / double(decay_steps), 0.0, 1.0);
  return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace shc::jobs
