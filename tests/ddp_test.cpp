// DistributedDataParallel on whatever world this runs in (1, 2 or 4 ranks under CTest), on a
// model of bare parameter tensors whose gradients are closed forms: bucket order when one rank
// skips a parameter, a failure of the communication thread, and the device rule (every tensor
// handed to a collective comes from the communicator's buffer helpers).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel/checking_communicator.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"

namespace shc::parallel {
namespace {

constexpr int64_t kParams = 6, kNumel = 1000;
// 4000-byte parameters: every parameter gets a bucket of its own.
constexpr double kOneParameterPerBucket = 4000.0 / (1024 * 1024);

std::unique_ptr<CheckingCommunicator> checking_world() {
  auto inner = make_communicator("mpi", c10::Device(c10::kCPU), WatchdogOptions{60});
  return std::make_unique<CheckingCommunicator>(std::move(inner));
}

std::vector<torch::Tensor> make_parameters() {
  std::vector<torch::Tensor> params;
  for (int64_t k = 0; k < kParams; ++k) params.push_back(torch::ones({kNumel}).requires_grad_());
  return params;
}

// Rank r's loss: sum_k (r + 1)(k + 1) * sum(w_k), so d/dw_k = (r + 1)(k + 1) everywhere; rank r
// leaves out the parameters for which skip(r, k).
template <typename Skip>
torch::Tensor loss_of_rank(const std::vector<torch::Tensor>& params, int rank, Skip skip) {
  auto loss = torch::zeros({});
  for (int64_t k = 0; k < kParams; ++k) {
    if (!skip(rank, k)) loss = loss + double((rank + 1) * (k + 1)) * params[k].sum();
  }
  return loss;
}

TEST(DdpTest, BucketsReduceInOrderWhenARankSkipsAParameter) {
  auto comm = checking_world();
  const int size = comm->size();
  // Odd ranks never use the last parameter, which is the first bucket (reverse registration
  // order): their later buckets are ready first, and must still wait for it.
  const auto skip = [](int rank, int64_t k) { return rank % 2 == 1 && k == kParams - 1; };
  auto params = make_parameters();
  DistributedDataParallel ddp(params, *comm, kOneParameterPerBucket);
  ASSERT_EQ(ddp.num_buckets(), size_t(kParams));
  for (int step = 0; step < 2; ++step) {
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    loss_of_rank(params, comm->rank(), skip).backward();
    ddp.finish_gradient_sync();
    for (int64_t k = 0; k < kParams; ++k) {
      double expected = 0;
      for (int r = 0; r < size; ++r) expected += skip(r, k) ? 0.0 : double((r + 1) * (k + 1));
      expected /= size;
      ASSERT_TRUE(params[k].grad().defined()) << "parameter " << k;
      EXPECT_TRUE(torch::allclose(params[k].grad(), torch::full({kNumel}, expected)))
          << "step " << step << ", parameter " << k << ": " << params[k].grad()[0].item<double>()
          << " instead of " << expected;
    }
  }
  EXPECT_TRUE(comm->violations().empty());
}

TEST(DdpTest, CommunicationThreadFailureReachesTheCaller) {
  auto comm = checking_world();
  auto params = make_parameters();
  DistributedDataParallel ddp(params, *comm, kOneParameterPerBucket);
  // Every rank fails on its second bucket, so no rank enters a collective the others skip.
  comm->inject_failure("all_reduce", 2);
  loss_of_rank(params, comm->rank(), [](int, int64_t) { return false; }).backward();
  try {
    ddp.finish_gradient_sync();
    ADD_FAILURE() << "finish_gradient_sync() returned although the communication thread failed";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("injected failure in all_reduce #2"),
              std::string::npos)
        << error.what();
  }
}

TEST(DdpTest, CollectiveBuffersComeFromTheCommunicator) {
  auto comm = checking_world();
  auto params = make_parameters();
  // Parameters live on the model's device, which the trainer makes the communicator's.
  comm->allow(params);
  DistributedDataParallel ddp(params, *comm, 25.0);
  ddp.broadcast_parameters(0);
  ddp.set_sync(false);  // accumulation: the first micro-batch stays local
  loss_of_rank(params, comm->rank(), [](int, int64_t) { return false; }).backward();
  ddp.set_sync(true);
  loss_of_rank(params, comm->rank(), [](int, int64_t) { return false; }).backward();
  ddp.finish_gradient_sync();
  const double mean_rank = comm->all_reduce_scalar(comm->rank(), ReduceOp::kAvg);
  EXPECT_DOUBLE_EQ(mean_rank, (comm->size() - 1) / 2.0);
  EXPECT_EQ(comm->count("all_reduce"), 2);  // one bucket, one scalar
  for (const auto& violation : comm->violations()) ADD_FAILURE() << violation;
}

TEST(DdpTest, ParametersOnAnotherDeviceThanTheCommunicatorAreRejected) {
  auto comm = checking_world();
  std::vector<torch::Tensor> params{torch::ones({4}, torch::kMeta).requires_grad_()};
  try {
    DistributedDataParallel ddp(params, *comm);
    ADD_FAILURE() << "a meta parameter was accepted by a CPU communicator";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("is on meta, but the communicator works on cpu"),
              std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace shc::parallel
