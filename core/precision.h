// Numerically sensitive parts (norm statistics, rotary angles, routing, Cayley solves, logits)
// run in fp32 whatever the compute dtype, e.g. under bf16 autocast; fp64 stays fp64 so that tests
// can check identities down to round-off.
#pragma once

#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>

namespace shc {

inline at::Tensor at_least_fp32(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? x : x.to(at::kFloat);
}

// bf16 autocast on `device` for a scope when `bf16`, plain compute otherwise; the previous
// (thread-local) autocast state comes back on exit. Weights, gradients and optimizer state stay
// fp32: autocast only lowers the compute of matmul-like ops.
class AutocastScope {
 public:
  AutocastScope(bool bf16, c10::DeviceType device)
      : device_(device),
        previous_enabled_(at::autocast::is_autocast_enabled(device)),
        previous_dtype_(at::autocast::get_autocast_dtype(device)) {
    if (bf16) at::autocast::set_autocast_dtype(device_, at::kBFloat16);
    at::autocast::set_autocast_enabled(device_, bf16);
  }
  ~AutocastScope() {
    at::autocast::set_autocast_enabled(device_, previous_enabled_);
    at::autocast::set_autocast_dtype(device_, previous_dtype_);
    if (!previous_enabled_) at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType device_;
  bool previous_enabled_;
  at::ScalarType previous_dtype_;
};

}  // namespace shc
