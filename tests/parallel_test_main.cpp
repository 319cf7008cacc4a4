// main() of parallel_test, which runs as every rank of `mpirun -np N` (and alone, as a 1-rank
// world). Rank 0 prints GoogleTest's usual output; the other ranks print only their failures,
// prefixed with their rank. Every rank exits non-zero if a test failed on any rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include "parallel/runtime.h"

namespace {

class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const shc::parallel::Runtime& runtime = shc::parallel::Runtime::instance();
  if (runtime.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(runtime.rank()));
  }
  const int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int failed_anywhere = failed;
  MPI_Allreduce(&failed, &failed_anywhere, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (runtime.rank() == 0 && failed_anywhere && !failed) {
    std::fprintf(stderr, "[rank 0] tests failed on other ranks (their [rank r] lines above)\n");
  }
  return failed_anywhere;
}
