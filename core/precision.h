// Numerically sensitive parts (norm statistics, rotary angles, routing, Cayley solves, logits)
// run in fp32 whatever the compute dtype, e.g. under bf16 autocast; fp64 stays fp64 so that tests
// can check identities down to round-off.
#pragma once

#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

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

// Autocast off for a scope, on every device: the hyper-connection routing (its projections, H_res,
// H_pre/H_post and the carried stream state) stays fp32 under bf16 autocast; only the sublayers
// run in bf16. Autocast lowers matmul-like ops, so without this H_res would come back as bf16
// (||H_res||_2 up to 1 + 2^-8) and the state would be rounded to bf16 at every sublayer.
class FullPrecisionScope {
 public:
  FullPrecisionScope() : guard_(c10::autocast_dispatch_keyset) {}

 private:
  c10::impl::ExcludeDispatchKeyGuard guard_;
};

}  // namespace shc
