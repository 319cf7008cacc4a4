// How a training process keeps its CPU memory between steps.
#pragma once

#include <malloc.h>

namespace shc {

// CPU tensors come from glibc's malloc (LibTorch keeps no CPU cache of its own). By default glibc
// serves each block above its mmap threshold (at most 32 MiB) with a fresh mmap and unmaps it on
// free, and trims the heap top, so the same activation buffers are faulted in again, 4 KiB at a
// time, on every step: at T = 4096 tokens and d = 1024 that was half of a hyper-connection step
// (`shc profile --routing-bench`: 7 of its 14 s were page faults in the kernel). A training
// process allocates the same sizes every step, so it keeps freed memory in the heap instead (no
// mmap for large blocks, no trimming; glibc still falls back to mmap if the heap cannot grow). The
// resident size stays at the peak, which every step reaches anyway. Call once, before the first
// tensor.
inline void keep_freed_host_memory() {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);  // -1: never trim
}

}  // namespace shc
