// A diagnostic communicator for the device rule of SPEC §5, used by the tests (on a CPU-only
// machine) and by `shc selftest` (on the real devices). It wraps a real communicator and, for
// every collective, checks that each tensor it receives lives in a buffer
// that came from its own empty() / zeros() / scalar() (or that the test declared a device tensor
// with allow(), e.g. the model's parameters, which the trainer moves to the runtime's device).
// On a GPU the helpers allocate on the communicator's CUDA device, so a caller that passes this
// check hands NCCL only device tensors; a bare at::empty or torch::tensor() in a collective path
// fails it here, on the CPU. It also counts collectives by name (e.g. all-gathers per step), and
// can inject a failure: the n-th collective of one name throws instead of running.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace shc::parallel {

class CheckingCommunicator final : public Communicator {
 public:
  // What every communicator split from one root shares: the known buffers and the counts.
  struct Ledger {
    std::mutex mutex;
    std::vector<c10::Storage> buffers;  // strong references: an address is never reused
    std::vector<std::string> violations;
    std::map<std::string, int64_t> counts;
    std::string fail_op;  // inject_failure()
    int64_t fail_at = 0;
  };

  explicit CheckingCommunicator(std::unique_ptr<Communicator> inner,
                                std::shared_ptr<Ledger> ledger = std::make_shared<Ledger>())
      : Communicator(inner->rank(), inner->size(), WatchdogOptions{0}),
        inner_(std::move(inner)),
        ledger_(std::move(ledger)) {}

  std::string backend() const override { return inner_->backend(); }
  c10::Device device() const override { return inner_->device(); }

  // Declares tensors that live on the device although they were not made here.
  void allow(const std::vector<at::Tensor>& tensors) {
    std::lock_guard<std::mutex> lock(ledger_->mutex);
    for (const auto& t : tensors) ledger_->buffers.push_back(t.storage());
  }
  std::vector<std::string> violations() const {
    std::lock_guard<std::mutex> lock(ledger_->mutex);
    return ledger_->violations;
  }
  int64_t count(const std::string& op) const {
    std::lock_guard<std::mutex> lock(ledger_->mutex);
    auto it = ledger_->counts.find(op);
    return it == ledger_->counts.end() ? 0 : it->second;
  }
  void reset_counts() {
    std::lock_guard<std::mutex> lock(ledger_->mutex);
    ledger_->counts.clear();
  }
  // The nth (1-based, counted from now) collective named `op` throws std::runtime_error.
  void inject_failure(const std::string& op, int64_t nth) {
    std::lock_guard<std::mutex> lock(ledger_->mutex);
    ledger_->fail_op = op;
    ledger_->fail_at = ledger_->counts[op] + nth;
  }

 protected:
  Completion do_all_reduce_sum(const at::Tensor& tensor) override {
    check("all_reduce", {tensor});
    inner_->all_reduce(tensor);
    return {};
  }
  Completion do_reduce_scatter_sum(const at::Tensor& input, const at::Tensor& output) override {
    check("reduce_scatter", {input, output});
    inner_->reduce_scatter(input, output);
    return {};
  }
  Completion do_all_gather(const at::Tensor& input, const at::Tensor& output) override {
    check("all_gather", {input, output});
    inner_->all_gather(input, output);
    return {};
  }
  Completion do_broadcast(const at::Tensor& tensor, int root) override {
    check("broadcast", {tensor});
    inner_->broadcast(tensor, root);
    return {};
  }
  Completion do_barrier() override {
    check("barrier", {});
    inner_->barrier();
    return {};
  }
  std::unique_ptr<Communicator> do_split(int color, int key) override {
    return std::make_unique<CheckingCommunicator>(inner_->split(color, key), ledger_);
  }
  at::Tensor do_allocate(std::int64_t numel, at::ScalarType dtype, bool zero) override {
    at::Tensor t = Communicator::do_allocate(numel, dtype, zero);
    std::lock_guard<std::mutex> lock(ledger_->mutex);
    ledger_->buffers.push_back(t.storage());
    return t;
  }

 private:
  void check(const std::string& op, const std::vector<at::Tensor>& tensors) {
    std::lock_guard<std::mutex> lock(ledger_->mutex);
    const int64_t count = ++ledger_->counts[op];
    if (op == ledger_->fail_op && count == ledger_->fail_at) {
      throw std::runtime_error("injected failure in " + op + " #" + std::to_string(count));
    }
    for (const auto& t : tensors) {
      bool known = false;
      for (const auto& s : ledger_->buffers) {
        if (s.unsafeGetStorageImpl() == t.storage().unsafeGetStorageImpl()) {
          known = true;
          break;
        }
      }
      if (!known) {
        ledger_->violations.push_back(op + " received a tensor of " + std::to_string(t.numel()) +
                                      " elements that did not come from the communicator");
      }
    }
  }

  std::unique_ptr<Communicator> inner_;
  std::shared_ptr<Ledger> ledger_;
};

}  // namespace shc::parallel
