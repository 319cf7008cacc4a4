// shc::inject: hyper-connections in an existing LibTorch model, in place (SPEC §4.3; the "surgical
// injection" of seed 004). It walks the module tree, and every sub-module the predicate selects
// (by its dotted name, e.g. "blocks.3", or by its type) is replaced in its slot by an
// InjectedModule that keeps the original module, with its parameters (the same tensors), as its
// submodule "module", and adds a HyperConnectionBranch ("connection") around it.
//
// The host model keeps calling its layers as before, with the usual (..., d) tensors: the n*m
// streams live beside it, in a state that the injected modules of one inject() call share. The
// first of them (in tree order) expands the tensor it receives; each one then mixes the streams
// and hands the host a (..., d) summary: the mean of the streams (history: the latest state), so
// that the rest of the host sees values of the original scale; the next injected module takes the
// streams back up, provided it receives exactly that tensor. Anything else (the host changed the
// value between two injected modules, or skipped the first one) is an error, never a silent
// restart. One forward at a time per injected model; the last forward's streams stay referenced
// until the next one.
//
// Selected modules are, by default, residual blocks themselves (a transformer layer computing
// F(x) = x + f(x)): the branch is f = F(x) - x, and with `disable` the injected module returns
// F(x) unchanged, so the model keeps its outputs exactly. With residual_inside(false) a selected
// module is the branch f itself (x + f(x) when disabled).
//
// Slots that can be re-pointed in C++ (a parent calls typed members directly, which no tree walk
// can redirect): elements of torch::nn::Sequential (called through their AnyModule) and the
// blocks of SHCTransformer (run_block dispatches to an InjectedModule in its `blocks` slot, with
// the KV cache passed through). Any other selected module is an error naming its parent.
// A sharded runtime (FSDP) runs blocks as separate units and is not supported for injected models;
// plain autograd and DDP are.
#pragma once

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/common.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attention.h"
#include "hyper_connections.h"

namespace shc {

struct InjectOptions {
  explicit InjectOptions(int64_t dim) : dim_(dim) {}
  TORCH_ARG(int64_t, dim);              // feature width d of the tensors between the modules
  TORCH_ARG(int64_t, num_streams) = 4;  // n (history: the window H)
  TORCH_ARG(HyperConnectionsOptions, connections) = {};
  TORCH_ARG(bool, residual_inside) = true;  // selected modules compute x + f(x) themselves
};

// name: the dotted path from the root ("layers.2"); module: the candidate.
using ModulePredicate =
    std::function<bool(const std::string& name, const torch::nn::Module& module)>;

// Selects modules whose full dotted name matches the ECMAScript regular expression (whole name).
ModulePredicate name_matches(const std::string& pattern);

// Wraps every module the predicate selects (not descending into a selected one) and returns
// their names in tree order. New parameters take the device and dtype of the wrapped module's
// first parameter. Throws std::invalid_argument if nothing is selected or a slot cannot be
// re-pointed.
std::vector<std::string> inject(torch::nn::Module& root, const ModulePredicate& predicate,
                                const InjectOptions& options);

struct InjectedStreams;  // the streams shared by the injected modules of one inject() call

class InjectedModuleImpl : public torch::nn::Module {
 public:
  // `call` runs the original module (the KV cache is for SHCTransformer blocks).
  using Call = std::function<torch::Tensor(const torch::Tensor&, LayerKVCache*)>;
  InjectedModuleImpl(std::shared_ptr<torch::nn::Module> module, Call call,
                     const InjectOptions& options, std::shared_ptr<InjectedStreams> streams,
                     int64_t position);

  // x (..., d) -> (..., d): see the header comment.
  torch::Tensor forward(const torch::Tensor& x, LayerKVCache* cache = nullptr);

  std::shared_ptr<torch::nn::Module> module;  // the original, with its parameters
  HyperConnectionBranch connection{nullptr};  // the routing around it

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(static_cast<LayerKVCache*>(nullptr))})

 private:
  Call call_;
  std::shared_ptr<InjectedStreams> streams_;
  int64_t position_;
  bool residual_inside_;
};
TORCH_MODULE(InjectedModule);

}  // namespace shc
