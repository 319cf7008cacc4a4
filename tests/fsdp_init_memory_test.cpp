// Sharded initialisation (SPEC §5) under mpirun -np 2: FSDP builds the 1b preset (1.68 B
// parameters, 6.7 GB in fp32) unit by unit, and each rank's peak resident memory grows during the
// construction by at most its shards plus two of the largest unit (the unit being built and its
// copy into the shard, with slack for the allocator), far below the whole model.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <malloc.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "core/config.h"
#include "parallel/communicator.h"
#include "parallel/fsdp.h"
#include "parallel/transformer_units.h"

namespace shc {
namespace {

// The process's peak resident set (VmHWM of /proc/self/status) in bytes.
int64_t peak_resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  ADD_FAILURE() << "no VmHWM in /proc/self/status";
  return 0;
}

TEST(FSDPInitialisation, OneBillionPresetNeverMaterialisesTheModel) {
  // glibc raises its mmap threshold to the size of freed blocks (up to 32 MiB), so a unit's
  // freed matrices would stay in the heap, fragmented between small allocations that outlive them
  // (~36 MiB per 1b block here): resident but not in use. A fixed threshold returns them to the
  // system, so VmHWM measures the memory FSDP holds.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  auto comm = parallel::make_communicator("mpi", torch::kCPU);
  // The same construction on the tiny preset first, so that the baseline includes what any first
  // run pages in or initialises once (LibTorch's code, MPI's buffers), not only model memory.
  parallel::FullyShardedDataParallel(parallel::TransformerUnits::builder(get_config("tiny")), *comm,
                                     nullptr, {});
  const auto cfg = get_config("1b");
  torch::manual_seed(0);
  const int64_t before = peak_resident_bytes();  // the high-water mark cannot be reset
  parallel::FullyShardedDataParallel fsdp(parallel::TransformerUnits::builder(cfg), *comm, nullptr,
                                          {});
  const int64_t growth = peak_resident_bytes() - before;
  const int64_t element = int64_t(sizeof(float));
  const int64_t shards = fsdp.total_padded_numel() / comm->size() * element;
  const int64_t unit = fsdp.largest_unit_numel() * element;
  std::printf(
      "rank %d: %lld parameters; VmHWM grew %.0f MiB <= shards %.0f MiB + 2 x largest "
      "unit %.0f MiB = %.0f MiB\n",
      comm->rank(), static_cast<long long>(fsdp.total_numel()), growth / 1048576.0,
      shards / 1048576.0, unit / 1048576.0, (shards + 2 * unit) / 1048576.0);
  EXPECT_GT(fsdp.total_numel(), 1'600'000'000);
  EXPECT_LE(growth, shards + 2 * unit);
}

}  // namespace
}  // namespace shc
