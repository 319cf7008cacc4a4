// `ddp-fault`: a job for the failure-propagation tests (SPEC §5), linked only into the test
// program shc_with_faults (the real `shc` CLI plus this job). It trains the tests' small model
// with DDP whose communication thread fails on one rank: that rank's all-reduce of bucket
// --fault.bucket throws before entering the collective, so its peers wait in that all-reduce for
// ever. The job must still end promptly, every rank, with exit code 1 and the message on stderr
// and in the failing rank's log file.
#include <torch/torch.h>

#include <memory>
#include <string>

#include <boost/log/trivial.hpp>

#include "core/transformer.h"
#include "jobs/job.h"
#include "jobs/logging.h"
#include "parallel/checking_communicator.h"
#include "parallel/communicator.h"
#include "parallel/ddp.h"
#include "parallel/runtime.h"
#include "tests/test_model_config.h"

namespace shc::jobs {
namespace {

class DdpFaultJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    options.add_options()                                                                  //
        ("run.dir", po::value<std::string>()->required(), "logs/rank<R>.log go here")      //
        ("fault.rank", po::value<int>()->default_value(1), "the rank whose thread fails")  //
        ("fault.bucket", po::value<int>()->default_value(3),
         "the failing all-reduce, counted over the run");
  }

  int run(const po::variables_map& vm) override {
    auto& runtime = parallel::Runtime::instance();
    runtime.set_collective_timeout(600);
    add_rank_log_file(vm["run.dir"].as<std::string>(), runtime.rank());
    auto world = parallel::make_communicator("mpi", c10::Device(c10::kCPU), {600});
    parallel::CheckingCommunicator grads(world->split(0, runtime.rank()));
    if (runtime.rank() == vm["fault.rank"].as<int>()) {
      grads.inject_failure("all_reduce", vm["fault.bucket"].as<int>());
    }
    torch::manual_seed(1);
    SHCTransformer model(test::small_model_config());
    // A bucket per parameter tensor or two: several all-reduces per step.
    parallel::DistributedDataParallel ddp(model->parameters(), grads, 0.004);
    for (int step = 1;; ++step) {
      auto ids = torch::randint(61, {2, 17});
      model->forward(ids, ids).backward();
      ddp.finish_gradient_sync();
      BOOST_LOG_TRIVIAL(info) << "step " << step << " done";
    }
  }
};

SHC_REGISTER_JOB(DdpFaultJob, "ddp-fault",
                 "test only: DDP whose communication thread fails on one rank");

}  // namespace
}  // namespace shc::jobs
