// What this machine can do, measured by the job that reports against it (`shc profile`): the
// fp32 GEMM rate (the peak that MFU divides by) and the memory copy bandwidth (the limit of a
// memory-bound operator such as the hyper-connection routing step).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>

namespace shc::jobs {

struct GemmPeak {
  int64_t size = 0;        // C (size x size) = A (size x size) B (size x size), fp32
  double gflop_per_s = 0;  // 2 size^3 FLOPs / best time
};
// Best of `repeats` timed products after one warm-up, with the current intra-op threads.
GemmPeak measure_gemm_peak(int64_t size, int repeats, c10::Device device = c10::kCPU);

struct CopyBandwidth {
  int64_t bytes = 0;    // size of the copied buffer
  double gb_per_s = 0;  // (bytes read + bytes written) / best time, in 1e9 bytes/s
};
// dst.copy_(src) of a `bytes` fp32 buffer (far larger than the caches): best of `repeats` after
// one warm-up. Read and write both count, as a memory-bound operator's byte model does.
CopyBandwidth measure_copy_bandwidth(int64_t bytes, int repeats, c10::Device device = c10::kCPU);

}  // namespace shc::jobs
