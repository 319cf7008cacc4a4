// Numerically sensitive parts (norm statistics, rotary angles, routing, Cayley solves, logits)
// run in fp32 whatever the compute dtype, e.g. under bf16 autocast; fp64 stays fp64 so that tests
// can check identities down to round-off.
#pragma once

#include <ATen/core/Tensor.h>

namespace shc {

inline at::Tensor at_least_fp32(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? x : x.to(at::kFloat);
}

}  // namespace shc
