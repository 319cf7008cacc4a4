// The MPI backend's collectives against hand-computed results, on whatever world this runs in
// (1, 2 or 4 ranks under CTest). Rank r contributes values r * m + i, so every expected value is
// a closed-form sum. Value checks use EXPECT_* (never ASSERT_*): a rank that returned early from a
// test would skip a collective the others enter.
#include <ATen/core/Formatting.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/mpi_communicator.h"
#include "parallel/runtime.h"

namespace shc::parallel {
namespace {

// A hang fails the test run with the watchdog's exit 5 instead of waiting for CTest's timeout.
constexpr WatchdogOptions kTestWatchdog{60};

Communicator& world() {
  static std::unique_ptr<Communicator> communicator =
      make_communicator("mpi", c10::Device(c10::kCPU), kTestWatchdog);
  return *communicator;
}

// Per-rank step m: small for 16-bit floats so that every sum stays an exact integer there.
double step(at::ScalarType type) {
  return type == at::kBFloat16 || type == at::kHalf ? 16 : 1000;
}

// Values base + 0, 1, ..., n-1 as `type`.
at::Tensor iota(std::int64_t n, double base, at::ScalarType type) {
  return at::arange(n, at::TensorOptions().dtype(at::kDouble)).add_(base).to(type);
}

at::Tensor as_double(const at::Tensor& tensor) {
  return tensor.to(at::kDouble);
}

// sum over ranks q < size of q
double rank_sum(int size) {
  return size * (size - 1) / 2.0;
}

void expect_equal(const at::Tensor& actual, const at::Tensor& expected) {
  EXPECT_TRUE(as_double(actual).equal(as_double(expected))) << "actual:\n"
                                                            << actual << "\nexpected:\n"
                                                            << expected;
}

class DtypeTest : public ::testing::TestWithParam<at::ScalarType> {};

INSTANTIATE_TEST_SUITE_P(Dtypes, DtypeTest,
                         ::testing::Values(at::kFloat, at::kDouble, at::kBFloat16, at::kHalf,
                                           at::kInt, at::kLong),
                         [](const ::testing::TestParamInfo<at::ScalarType>& info) {
                           return std::string(c10::toString(info.param));
                         });

TEST_P(DtypeTest, AllReduceSumOfUnevenLength) {
  Communicator& comm = world();
  const at::ScalarType type = GetParam();
  const double m = step(type);
  at::Tensor tensor = iota(7, comm.rank() * m, type);
  comm.all_reduce(tensor, ReduceOp::kSum);
  EXPECT_EQ(tensor.scalar_type(), type);
  // sum_q (q m + i) = size i + m size (size - 1) / 2
  expect_equal(tensor, iota(7, 0, at::kDouble).mul_(comm.size()).add_(m * rank_sum(comm.size())));
}

TEST_P(DtypeTest, ReduceScatterGivesEachRankItsChunk) {
  Communicator& comm = world();
  const at::ScalarType type = GetParam();
  const double m = step(type);
  const int size = comm.size(), r = comm.rank();
  const at::Tensor input = iota(3 * size, r * m, type);
  at::Tensor output = at::empty({3}, at::TensorOptions().dtype(type));
  comm.reduce_scatter(input, output, ReduceOp::kSum);
  // element j of chunk r is index 3r + j: sum_q (q m + 3r + j)
  expect_equal(output, iota(3, 3 * r, at::kDouble).mul_(size).add_(m * rank_sum(size)));
}

TEST_P(DtypeTest, AllGatherConcatenatesInRankOrder) {
  Communicator& comm = world();
  const at::ScalarType type = GetParam();
  const double m = step(type);
  const int size = comm.size();
  const at::Tensor input = iota(3, comm.rank() * m, type);
  at::Tensor output = at::empty({size, 3}, at::TensorOptions().dtype(type));
  comm.all_gather(input, output);
  for (int q = 0; q < size; ++q) expect_equal(output[q], iota(3, q * m, at::kDouble));
}

TEST_P(DtypeTest, BroadcastFromTheLastRank) {
  Communicator& comm = world();
  const at::ScalarType type = GetParam();
  const double m = step(type);
  const int root = comm.size() - 1;  // not 0 whenever there is more than one rank
  at::Tensor tensor = comm.rank() == root ? iota(7, root * m, type)
                                          : at::full({7}, -1, at::TensorOptions().dtype(type));
  comm.broadcast(tensor, root);
  expect_equal(tensor, iota(7, root * m, at::kDouble));
}

TEST(Collectives, AverageDividesTheSumByTheGroupSize) {
  Communicator& comm = world();
  const int size = comm.size(), r = comm.rank();
  at::Tensor tensor = iota(5, r * 1000.0, at::kDouble);
  comm.all_reduce(tensor, ReduceOp::kAvg);
  expect_equal(tensor, iota(5, 1000.0 * rank_sum(size) / size, at::kDouble));

  at::Tensor single = iota(5, r * 1000.0, at::kFloat);
  comm.all_reduce(single, ReduceOp::kAvg);
  EXPECT_TRUE(as_double(single).allclose(iota(5, 1000.0 * rank_sum(size) / size, at::kDouble)));

  const at::Tensor input = iota(2 * size, r * 1000.0, at::kDouble);
  at::Tensor output = at::empty({2}, at::TensorOptions().dtype(at::kDouble));
  comm.reduce_scatter(input, output, ReduceOp::kAvg);
  expect_equal(output, iota(2, 2 * r + 1000.0 * rank_sum(size) / size, at::kDouble));

  at::Tensor integers = at::zeros({3}, at::TensorOptions().dtype(at::kLong));
  EXPECT_THROW(comm.all_reduce(integers, ReduceOp::kAvg), std::invalid_argument);
}

TEST(Collectives, EmptyTensorsAreFine) {
  Communicator& comm = world();
  at::Tensor empty = at::empty({0}, at::TensorOptions().dtype(at::kFloat));
  comm.all_reduce(empty);
  comm.broadcast(empty, 0);
  at::Tensor gathered = at::empty({0}, at::TensorOptions().dtype(at::kFloat));
  comm.all_gather(empty, gathered);
  EXPECT_EQ(empty.numel(), 0);
}

// What FSDP does with a flat parameter of uneven length L: pad to a multiple of the group size,
// reduce-scatter / all-gather equal chunks, drop the padding.
TEST(Collectives, CallerPaddedUnevenLengths) {
  Communicator& comm = world();
  const int size = comm.size(), r = comm.rank();
  const std::int64_t length = 10, chunk = (length + size - 1) / size, padded = chunk * size;

  // Gradients: rank q holds q + 1 everywhere; the padding is zero.
  at::Tensor gradient = at::zeros({padded}, at::TensorOptions().dtype(at::kFloat));
  gradient.narrow(0, 0, length).fill_(r + 1);
  at::Tensor shard = at::empty({chunk}, at::TensorOptions().dtype(at::kFloat));
  comm.reduce_scatter(gradient, shard, ReduceOp::kSum);
  at::Tensor expected = at::zeros({chunk}, at::TensorOptions().dtype(at::kDouble));
  for (std::int64_t j = 0; j < chunk; ++j) {
    if (r * chunk + j < length) expected[j] = size * (size + 1) / 2.0;
  }
  expect_equal(shard, expected);

  // Parameters: v[k] = k / 2, each rank holds its (padded) chunk.
  const at::Tensor full = iota(length, 0, at::kFloat).mul_(0.5);
  at::Tensor mine = at::zeros({chunk}, at::TensorOptions().dtype(at::kFloat));
  const std::int64_t begin = std::min<std::int64_t>(r * chunk, length);
  const std::int64_t end = std::min<std::int64_t>((r + 1) * chunk, length);
  mine.narrow(0, 0, end - begin).copy_(full.narrow(0, begin, end - begin));
  at::Tensor gathered = at::empty({padded}, at::TensorOptions().dtype(at::kFloat));
  comm.all_gather(mine, gathered);
  expect_equal(gathered.narrow(0, 0, length), full);
}

TEST(Collectives, UnpaddedSizesAreRejected) {
  Communicator& comm = world();
  const int size = comm.size();
  const at::Tensor input = at::zeros({3 * size + 1}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor output = at::zeros({3}, at::TensorOptions().dtype(at::kFloat));
  try {
    comm.reduce_scatter(input, output, ReduceOp::kSum);
    ADD_FAILURE() << "reduce_scatter accepted an input that is not size() x output";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("pad"), std::string::npos) << error.what();
  }
  at::Tensor short_output = at::zeros({3 * size - 1}, at::TensorOptions().dtype(at::kFloat));
  EXPECT_THROW(comm.all_gather(output, short_output), std::invalid_argument);
  // Nothing was entered: the sequence numbers of all ranks stay in step.
  EXPECT_NO_THROW(comm.barrier());
}

TEST(Collectives, AllGatherInPlace) {
  Communicator& comm = world();
  const int size = comm.size(), r = comm.rank();
  at::Tensor output = at::zeros({3 * size}, at::TensorOptions().dtype(at::kDouble));
  at::Tensor mine = output.narrow(0, 3 * r, 3);
  mine.copy_(iota(3, r * 1000.0, at::kDouble));
  comm.all_gather(mine, output);
  for (int q = 0; q < size; ++q) {
    expect_equal(output.narrow(0, 3 * q, 3), iota(3, q * 1000.0, at::kDouble));
  }

  // An input that overlaps the output anywhere else is refused.
  at::Tensor buffer = at::zeros({3 * size + 1}, at::TensorOptions().dtype(at::kDouble));
  at::Tensor target = buffer.narrow(0, 0, 3 * size);
  EXPECT_THROW(comm.all_gather(buffer.narrow(0, 3 * r + 1, 3), target), std::invalid_argument);
  at::Tensor overlapping = target.narrow(0, 0, 3);
  EXPECT_THROW(comm.reduce_scatter(target, overlapping, ReduceOp::kSum), std::invalid_argument);
}

TEST(Collectives, BadArgumentsAreRejected) {
  Communicator& comm = world();
  at::Tensor transposed = at::zeros({4, 3}, at::TensorOptions().dtype(at::kFloat)).t();
  EXPECT_THROW(comm.all_reduce(transposed), std::invalid_argument);
  at::Tensor flags = at::zeros({4}, at::TensorOptions().dtype(at::kBool));
  EXPECT_THROW(comm.all_reduce(flags), std::invalid_argument);
  at::Tensor undefined;
  EXPECT_THROW(comm.all_reduce(undefined), std::invalid_argument);
  // A tensor that is not on the CPU (meta stands in for CUDA, which this machine lacks).
  at::Tensor elsewhere = at::empty({4}, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  try {
    comm.all_reduce(elsewhere);
    ADD_FAILURE() << "the mpi backend accepted a non-CPU tensor";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("CPU tensors"), std::string::npos) << error.what();
  }
  const at::Tensor floats = at::zeros({1}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor doubles = at::zeros({comm.size()}, at::TensorOptions().dtype(at::kDouble));
  EXPECT_THROW(comm.all_gather(floats, doubles), std::invalid_argument);
  at::Tensor tensor = at::zeros({2}, at::TensorOptions().dtype(at::kFloat));
  EXPECT_THROW(comm.broadcast(tensor, comm.size()), std::invalid_argument);
  EXPECT_THROW(comm.broadcast(tensor, -1), std::invalid_argument);
  EXPECT_THROW(comm.split(-1, 0), std::invalid_argument);
}

TEST(Collectives, SequenceNumbersCountEnteredCollectives) {
  std::unique_ptr<Communicator> comm =
      make_communicator("mpi", c10::Device(c10::kCPU), kTestWatchdog);
  EXPECT_EQ(comm->last_sequence(), 0u);
  at::Tensor tensor = at::zeros({3}, at::TensorOptions().dtype(at::kFloat));
  comm->all_reduce(tensor);
  comm->barrier();
  EXPECT_EQ(comm->last_sequence(), 2u);
  at::Tensor flags = at::zeros({1}, at::TensorOptions().dtype(at::kBool));
  EXPECT_THROW(comm->all_reduce(flags), std::invalid_argument);
  EXPECT_EQ(comm->last_sequence(), 2u);  // a refused call enters nothing
  std::unique_ptr<Communicator> copy = comm->split(0, comm->rank());
  EXPECT_EQ(comm->last_sequence(), 3u);
  EXPECT_EQ(copy->last_sequence(), 0u);  // counted per communicator
}

TEST(Groups, EvenAndOddRanksSplit) {
  Communicator& comm = world();
  const int size = comm.size(), r = comm.rank(), parity = r % 2;
  std::unique_ptr<Communicator> group = comm.split(parity, r);
  EXPECT_EQ(group->backend(), "mpi");
  EXPECT_EQ(group->size(), parity == 0 ? (size + 1) / 2 : size / 2);
  EXPECT_EQ(group->rank(), r / 2);

  // World ranks parity, parity + 2, ...
  const at::Tensor expected_members =
      at::arange(parity, size, 2, at::TensorOptions().dtype(at::kDouble));

  at::Tensor sum = at::full({1}, r, at::TensorOptions().dtype(at::kLong));
  group->all_reduce(sum);
  EXPECT_EQ(sum.item<std::int64_t>(),
            static_cast<std::int64_t>(expected_members.sum().item<double>()));

  const at::Tensor mine = at::full({1}, r, at::TensorOptions().dtype(at::kDouble));
  at::Tensor gathered = at::empty({group->size()}, at::TensorOptions().dtype(at::kDouble));
  group->all_gather(mine, gathered);
  expect_equal(gathered, expected_members);

  // Group rank 0 is world rank `parity`.
  at::Tensor value =
      at::full({2}, r == parity ? 100 + parity : -1, at::TensorOptions().dtype(at::kInt));
  group->broadcast(value, 0);
  expect_equal(value, at::full({2}, 100 + parity, at::TensorOptions().dtype(at::kDouble)));

  const at::Tensor input = iota(2 * group->size(), r * 1000.0, at::kDouble);
  at::Tensor output = at::empty({2}, at::TensorOptions().dtype(at::kDouble));
  group->reduce_scatter(input, output, ReduceOp::kSum);
  const double member_sum = expected_members.sum().item<double>();
  expect_equal(
      output,
      iota(2, 2 * group->rank(), at::kDouble).mul_(group->size()).add_(1000.0 * member_sum));
  group->barrier();

  // The key orders the group: descending keys reverse it.
  std::unique_ptr<Communicator> reversed = comm.split(parity, -r);
  EXPECT_EQ(reversed->rank(), reversed->size() - 1 - r / 2);
  // A group of a group.
  std::unique_ptr<Communicator> single = group->split(group->rank(), 0);
  EXPECT_EQ(single->size(), 1);
  at::Tensor alone = at::full({1}, 5.0, at::TensorOptions().dtype(at::kFloat));
  single->all_reduce(alone, ReduceOp::kAvg);
  EXPECT_EQ(alone.item<float>(), 5.0f);
}

TEST(Collectives, BarrierWaitsForEveryRank) {
  Communicator& comm = world();
  const std::uint64_t before = comm.last_sequence();
  comm.barrier();
  EXPECT_EQ(comm.last_sequence(), before + 1);
}

// Restores the MPI count limit even when a check fails.
class MaxCountGuard {
 public:
  explicit MaxCountGuard(std::int64_t count) { set_mpi_max_count_for_testing(count); }
  ~MaxCountGuard() { set_mpi_max_count_for_testing(INT_MAX); }
};

// Tensors above MPI's INT_MAX count go through several calls; a limit of 2 elements takes the
// same code paths on small tensors.
TEST(Collectives, LargeCountsAreSplitIntoSeveralCalls) {
  Communicator& comm = world();
  const MaxCountGuard guard(2);
  const int size = comm.size(), r = comm.rank();
  for (const at::ScalarType type : {at::kFloat, at::kBFloat16}) {
    const double m = step(type);
    at::Tensor tensor = iota(7, r * m, type);
    comm.all_reduce(tensor);
    expect_equal(tensor, iota(7, 0, at::kDouble).mul_(size).add_(m * rank_sum(size)));

    const at::Tensor input = iota(5 * size, r * m, type);
    at::Tensor output = at::empty({5}, at::TensorOptions().dtype(type));
    comm.reduce_scatter(input, output);
    expect_equal(output, iota(5, 5 * r, at::kDouble).mul_(size).add_(m * rank_sum(size)));

    at::Tensor gathered = at::empty({size, 5}, at::TensorOptions().dtype(type));
    comm.all_gather(iota(5, r * m, type), gathered);
    for (int q = 0; q < size; ++q) expect_equal(gathered[q], iota(5, q * m, at::kDouble));

    at::Tensor in_place = at::zeros({5 * size}, at::TensorOptions().dtype(type));
    in_place.narrow(0, 5 * r, 5).copy_(iota(5, r * m, type));
    comm.all_gather(in_place.narrow(0, 5 * r, 5), in_place);
    for (int q = 0; q < size; ++q) {
      expect_equal(in_place.narrow(0, 5 * q, 5), iota(5, q * m, at::kDouble));
    }

    at::Tensor broadcast =
        comm.rank() == 0 ? iota(7, 3, type) : at::zeros({7}, at::TensorOptions().dtype(type));
    comm.broadcast(broadcast, 0);
    expect_equal(broadcast, iota(7, 3, at::kDouble));
  }
}

// The watchdog times collectives, not the gaps between them; ranks arriving late but within the
// timeout are fine. (That it fires on a real hang is watchdog_probe's test.)
TEST(WatchdogTest, QuietWhileCollectivesFinishInTime) {
  std::unique_ptr<Communicator> comm =
      make_communicator("mpi", c10::Device(c10::kCPU), WatchdogOptions{2.0});
  at::Tensor tensor = at::ones({4}, at::TensorOptions().dtype(at::kFloat));
  comm->all_reduce(tensor);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // idle longer than the timeout
  if (comm->rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  comm->all_reduce(tensor);  // the others wait 0.5 s inside it
  expect_equal(tensor, at::full({4}, comm->size() * comm->size(), at::TensorOptions()));
}

TEST(Factory, ChoosesAndValidatesBackends) {
  std::unique_ptr<Communicator> automatic =
      make_communicator("auto", c10::Device(c10::kCPU), kTestWatchdog);
  EXPECT_EQ(automatic->backend(), "mpi");
  EXPECT_EQ(automatic->size(), Runtime::instance().world_size());
  EXPECT_EQ(automatic->rank(), Runtime::instance().rank());
  EXPECT_THROW(make_communicator("gloo", c10::Device(c10::kCPU)), std::invalid_argument);
  EXPECT_THROW(make_communicator("mpi", c10::Device(c10::kCUDA, 0)), std::invalid_argument);
  if (!nccl_available()) {
    try {
      make_communicator("nccl", c10::Device(c10::kCUDA, 0));
      ADD_FAILURE() << "nccl accepted in a build without NCCL";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find("SHC_WITH_CUDA"), std::string::npos) << error.what();
    }
    EXPECT_THROW(make_communicator("auto", c10::Device(c10::kCUDA, 0)), std::invalid_argument);
  }
}

TEST(RuntimeTest, RanksAndDevice) {
  const Runtime& runtime = Runtime::instance();
  EXPECT_EQ(runtime.rank(), world().rank());
  EXPECT_EQ(runtime.world_size(), world().size());
  EXPECT_EQ(runtime.is_root(), runtime.rank() == 0);
  // CTest starts every rank on this one machine.
  EXPECT_EQ(runtime.local_rank(), runtime.rank());
  EXPECT_EQ(runtime.local_size(), runtime.world_size());
  if (!torch::cuda::is_available()) {
    EXPECT_TRUE(runtime.device().is_cpu());
  }
}

TEST(RuntimeTest, BroadcastString) {
  Runtime& runtime = Runtime::instance();
  std::string run_dir = runtime.rank() == 0 ? "runs/20240101-120000-tiny" : "";
  runtime.broadcast_string(run_dir);
  EXPECT_EQ(run_dir, "runs/20240101-120000-tiny");

  const int root = runtime.world_size() - 1;
  std::string text = runtime.rank() == root ? std::string(10000, 'x') + "end" : "other";
  runtime.broadcast_string(text, root);
  EXPECT_EQ(text, std::string(10000, 'x') + "end");
  runtime.barrier();
}

// Sets environment variables for one test and puts the old values back.
class EnvGuard {
 public:
  void set(const char* name, const char* value) {
    save(name);
    setenv(name, value, 1);
  }
  void unset(const char* name) {
    save(name);
    unsetenv(name);
  }
  ~EnvGuard() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        setenv(it->first.c_str(), it->second->c_str(), 1);
      } else {
        unsetenv(it->first.c_str());
      }
    }
  }

 private:
  void save(const char* name) {
    const char* old = std::getenv(name);
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(RuntimeTest, SlurmStepWithoutPmiIsRefused) {
  EnvGuard env;
  env.unset("OMPI_COMM_WORLD_SIZE");  // set when mpirun runs this test
  env.unset("SLURM_STEP_ID");
  env.unset("SLURM_NTASKS");
  env.set("SLURM_PROCID", "2");
  env.set("SLURM_LOCALID", "0");
  env.set("SLURM_STEP_NUM_TASKS", "4");
  try {
    check_slurm_launch(1);
    ADD_FAILURE() << "a 4-task srun step with a 1-rank MPI world was accepted";
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("srun --mpi=pmix"), std::string::npos) << message;
    EXPECT_NE(message.find("SLURM_PROCID=2"), std::string::npos) << message;
  }
  EXPECT_NO_THROW(check_slurm_launch(4));  // MPI sees the step: fine

  // Older srun: SLURM_NTASKS inside a step.
  env.unset("SLURM_STEP_NUM_TASKS");
  env.set("SLURM_NTASKS", "4");
  env.set("SLURM_STEP_ID", "0");
  EXPECT_THROW(check_slurm_launch(1), std::runtime_error);
  // The batch script itself (no step): one process is legitimate.
  env.unset("SLURM_STEP_ID");
  EXPECT_NO_THROW(check_slurm_launch(1));
  // mpirun inside the allocation: MPI's world is authoritative.
  env.set("SLURM_STEP_ID", "0");
  env.set("OMPI_COMM_WORLD_SIZE", "1");
  EXPECT_NO_THROW(check_slurm_launch(1));
  // Not under SLURM at all.
  env.unset("OMPI_COMM_WORLD_SIZE");
  env.unset("SLURM_PROCID");
  EXPECT_NO_THROW(check_slurm_launch(1));
}

}  // namespace
}  // namespace shc::parallel
