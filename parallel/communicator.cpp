#include "parallel/communicator.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cstdint>
#include <stdexcept>

#include "parallel/mpi_communicator.h"
#include "parallel/runtime.h"
#ifdef SHC_WITH_NCCL
#include <nccl.h>

#include "parallel/nccl_communicator.h"
#endif

namespace shc::parallel {
namespace {

bool supported_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
    case at::kDouble:
    case at::kBFloat16:
    case at::kHalf:
    case at::kInt:
    case at::kLong:
      return true;
    default:
      return false;
  }
}

bool overlap(const at::Tensor& a, const at::Tensor& b) {
  const auto a_begin = reinterpret_cast<std::uintptr_t>(a.data_ptr());
  const auto b_begin = reinterpret_cast<std::uintptr_t>(b.data_ptr());
  return a.numel() > 0 && b.numel() > 0 && a_begin < b_begin + b.nbytes() &&
         b_begin < a_begin + a.nbytes();
}

void check_same_dtype(const at::Tensor& input, const at::Tensor& output, const char* op) {
  if (input.scalar_type() != output.scalar_type()) {
    throw std::invalid_argument(
        std::string(op) + ": input is " + std::string(c10::toString(input.scalar_type())) +
        " but output is " + std::string(c10::toString(output.scalar_type())));
  }
}

void check_avg(const at::Tensor& tensor, ReduceOp op, const char* name) {
  if (op == ReduceOp::kAvg && !at::isFloatingType(tensor.scalar_type())) {
    throw std::invalid_argument(std::string(name) + ": kAvg needs a floating dtype, got " +
                                std::string(c10::toString(tensor.scalar_type())));
  }
}

}  // namespace

Communicator::Communicator(int rank, int size, WatchdogOptions options)
    : rank_(rank), size_(size), watchdog_options_(options) {}

Communicator::~Communicator() {
  stop_watchdog();
}

void Communicator::start_watchdog(MPI_Comm group) {
  watchdog_ =
      std::make_unique<Watchdog>(group, watchdog_options_, [this] { return async_error(); });
}

void Communicator::stop_watchdog() {
  if (watchdog_) watchdog_->stop();
}

void Communicator::run(const char* op, const std::function<Completion()>& primitive) {
  const std::uint64_t seq = ++sequence_;
  if (watchdog_) watchdog_->begin(seq, op);
  Completion completion;
  try {
    completion = primitive();
  } catch (...) {
    // The error reaches the caller; this rank's watchdog must not also report a timeout.
    if (watchdog_) watchdog_->end(seq);
    throw;
  }
  if (watchdog_) watchdog_->end(seq, std::move(completion));
}

void Communicator::run_watched(const char* op, const std::function<void()>& call) {
  run(op, [&] {
    call();
    return Completion();
  });
}

void Communicator::check_tensor(const at::Tensor& tensor, const char* op, const char* what) const {
  const std::string where = std::string(op) + " (" + backend() + " backend): " + what;
  if (!tensor.defined()) throw std::invalid_argument(where + " is an undefined tensor");
  if (tensor.device() != device()) {
    throw std::invalid_argument(where + " is on " + tensor.device().str() +
                                ", but this communicator works on " + device().str() +
                                " (mpi: CPU tensors; nccl: CUDA tensors of its device)");
  }
  if (!tensor.is_contiguous()) throw std::invalid_argument(where + " must be contiguous");
  if (!supported_dtype(tensor.scalar_type())) {
    throw std::invalid_argument(where + " has dtype " +
                                std::string(c10::toString(tensor.scalar_type())) +
                                "; supported: float32, float64, bfloat16, float16, int32, int64");
  }
}

void Communicator::all_reduce(const at::Tensor& tensor, ReduceOp op) {
  check_tensor(tensor, "all_reduce", "the tensor");
  check_avg(tensor, op, "all_reduce");
  run("all_reduce", [&] { return do_all_reduce_sum(tensor); });
  if (op == ReduceOp::kAvg) tensor.div_(size_);
}

void Communicator::reduce_scatter(const at::Tensor& input, const at::Tensor& output, ReduceOp op) {
  check_tensor(input, "reduce_scatter", "input");
  check_tensor(output, "reduce_scatter", "output");
  check_same_dtype(input, output, "reduce_scatter");
  check_avg(input, op, "reduce_scatter");
  if (input.numel() != size_ * output.numel()) {
    throw std::invalid_argument("reduce_scatter: input has " + std::to_string(input.numel()) +
                                " elements, but needs group size " + std::to_string(size_) +
                                " x output's " + std::to_string(output.numel()) + " = " +
                                std::to_string(size_ * output.numel()) +
                                "; pad the input to a multiple of the group size");
  }
  if (overlap(input, output)) {
    throw std::invalid_argument("reduce_scatter: input and output must not overlap");
  }
  run("reduce_scatter", [&] { return do_reduce_scatter_sum(input, output); });
  if (op == ReduceOp::kAvg) output.div_(size_);
}

void Communicator::all_gather(const at::Tensor& input, const at::Tensor& output) {
  check_tensor(input, "all_gather", "input");
  check_tensor(output, "all_gather", "output");
  check_same_dtype(input, output, "all_gather");
  if (output.numel() != size_ * input.numel()) {
    throw std::invalid_argument("all_gather: output has " + std::to_string(output.numel()) +
                                " elements, but needs group size " + std::to_string(size_) +
                                " x input's " + std::to_string(input.numel()) + " = " +
                                std::to_string(size_ * input.numel()) +
                                "; pad each rank's input to the same length");
  }
  const bool in_place = static_cast<const char*>(input.data_ptr()) ==
                        static_cast<const char*>(output.data_ptr()) + rank_ * input.nbytes();
  if (!in_place && overlap(input, output)) {
    throw std::invalid_argument(
        "all_gather: input overlaps output without being exactly output's chunk rank()");
  }
  run("all_gather", [&] { return do_all_gather(input, output); });
}

void Communicator::broadcast(const at::Tensor& tensor, int root) {
  check_tensor(tensor, "broadcast", "the tensor");
  if (root < 0 || root >= size_) {
    throw std::invalid_argument("broadcast: root " + std::to_string(root) +
                                " is not a rank of this group of " + std::to_string(size_));
  }
  run("broadcast", [&] { return do_broadcast(tensor, root); });
}

void Communicator::barrier() {
  run("barrier", [&] { return do_barrier(); });
}

std::unique_ptr<Communicator> Communicator::split(int color, int key) {
  if (color < 0) {
    throw std::invalid_argument("split: color must be >= 0 (every rank joins a group), got " +
                                std::to_string(color));
  }
  std::unique_ptr<Communicator> group;
  run("split", [&] {
    group = do_split(color, key);
    return Completion();
  });
  return group;
}

at::Tensor Communicator::do_allocate(std::int64_t numel, at::ScalarType dtype, bool zero) {
  const auto options = at::TensorOptions().dtype(dtype).device(device());
  return zero ? at::zeros({numel}, options) : at::empty({numel}, options);
}

at::Tensor Communicator::empty(std::int64_t numel, at::ScalarType dtype) {
  return do_allocate(numel, dtype, false);
}

at::Tensor Communicator::zeros(std::int64_t numel, at::ScalarType dtype) {
  return do_allocate(numel, dtype, true);
}

at::Tensor Communicator::scalar(double value, at::ScalarType dtype) {
  at::Tensor tensor = do_allocate(1, dtype, false);
  tensor.fill_(value);
  return tensor;
}

double Communicator::all_reduce_scalar(double value, ReduceOp op) {
  at::Tensor tensor = scalar(value, at::kDouble);
  all_reduce(tensor, op);
  return tensor.item<double>();  // on a GPU: waits for the reduction
}

bool nccl_available() {
#ifdef SHC_WITH_NCCL
  return true;
#else
  return false;
#endif
}

std::string nccl_version() {
#ifdef SHC_WITH_NCCL
  // ncclGetVersion encodes major*10000 + minor*100 + patch since NCCL 2.9, major*1000 + ...
  // before.
  int code = 0;
  if (ncclGetVersion(&code) != ncclSuccess) return "(version query failed)";
  const int major = code >= 10000 ? code / 10000 : code / 1000;
  const int minor = code >= 10000 ? code % 10000 / 100 : code % 1000 / 100;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(code % 100);
#else
  return "not built";
#endif
}

std::string library_versions() {
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  MPI_Get_library_version(mpi, &length);
  std::string mpi_version(mpi, static_cast<size_t>(length));
  if (const auto newline = mpi_version.find('\n'); newline != std::string::npos) {
    mpi_version.resize(newline);
  }
  return "MPI: " + mpi_version + "; NCCL: " + nccl_version();
}

std::unique_ptr<Communicator> make_communicator(const std::string& backend, c10::Device device,
                                                WatchdogOptions options) {
  Runtime::instance();  // MPI must be up before the first communicator
  std::string chosen = backend;
  if (chosen == "auto") chosen = device.is_cuda() && nccl_available() ? "nccl" : "mpi";
  if (chosen == "mpi") {
    if (!device.is_cpu()) {
      throw std::invalid_argument(
          "the mpi backend works on CPU tensors, not " + device.str() +
          (nccl_available() ? "; use the nccl backend for CUDA tensors"
                            : "; this build has no NCCL (configure with -DSHC_WITH_CUDA=ON)"));
    }
    return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, options);
  }
  if (chosen == "nccl") {
#ifdef SHC_WITH_NCCL
    if (!device.is_cuda()) {
      throw std::invalid_argument("the nccl backend works on CUDA tensors, not " + device.str() +
                                  "; use the mpi backend for CPU tensors");
    }
    if (!device.has_index()) device = Runtime::instance().device();
    return std::make_unique<NcclCommunicator>(MPI_COMM_WORLD, device, options);
#else
    throw std::invalid_argument(
        "the nccl backend is not in this build (configure with -DSHC_WITH_CUDA=ON); use the mpi "
        "or auto backend");
#endif
  }
  throw std::invalid_argument("unknown communication backend '" + backend +
                              "' (expected auto, mpi or nccl)");
}

}  // namespace shc::parallel
