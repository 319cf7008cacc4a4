// Sinkhorn-Knopp normalisation of exp(logits) for mHC's H_res (mhc_router.h), in the log domain.
// Two implementations with one result: the composed LibTorch ops (the reference, and what GPUs
// run) and, on CPU in float or double, one custom autograd function over a kernel that runs a
// vector's worth of tokens side by side (one per lane). The composed form costs two log-sum-exp
// ops per round over the whole (tokens, n, n) batch and saves their intermediates; the kernel
// keeps a block of tokens' matrices in registers and cache for all rounds and saves only the
// logits: backward runs the rounds again for the weights it needs.
#pragma once

#include <torch/types.h>

#include "../fused_hyper_connection.h"

namespace shc {

// `iters` rounds of row then column normalisation of exp(logits) (..., n, n), carried out in the
// log domain (log-sum-exp per row and column), so that logits spread over hundreds still give a
// doubly stochastic matrix instead of underflowed rows or columns. Runs in fp32 (fp64 when given
// fp64, for gradient checks). `ops`: the fused kernel (CPU float/double; the composed ops
// elsewhere) or the composed reference.
torch::Tensor sinkhorn_knopp(const torch::Tensor& logits, int64_t iters,
                             StreamOps ops = StreamOps::kFused);

}  // namespace shc
