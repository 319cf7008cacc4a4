#include "inject.h"

#include <torch/torch.h>

#include <map>
#include <regex>
#include <stdexcept>

#include "block.h"
#include "transformer.h"

namespace shc {

struct InjectedStreams {
  int64_t n, m;
  ResidualKind kind;
  torch::Tensor streams;  // after the last injected module that ran
  torch::Tensor handed;   // the tensor it handed to the host
  uint32_t version = 0;   // ... and that tensor's version then (in-place changes show)
  int64_t position = -1;
};

ModulePredicate name_matches(const std::string& pattern) {
  auto re = std::make_shared<std::regex>(pattern, std::regex::ECMAScript);
  return [re](const std::string& name, const torch::nn::Module&) {
    return std::regex_match(name, *re);
  };
}

InjectedModuleImpl::InjectedModuleImpl(std::shared_ptr<torch::nn::Module> original, Call call,
                                       const InjectOptions& options,
                                       std::shared_ptr<InjectedStreams> streams, int64_t position)
    : module(std::move(original)),
      call_(std::move(call)),
      streams_(std::move(streams)),
      position_(position),
      residual_inside_(options.residual_inside()) {
  register_module("module", module);
  connection =
      HyperConnectionBranch(options.dim(), options.num_streams(), options.connections(), position);
  if (!connection->disabled()) register_module("connection", connection);
}

torch::Tensor InjectedModuleImpl::forward(const torch::Tensor& x, LayerKVCache* cache) {
  if (connection->disabled()) return residual_inside_ ? call_(x, cache) : x + call_(x, cache);
  auto& st = *streams_;
  torch::Tensor s;
  if (position_ == 0) {
    s = expand_streams(x, st.n, st.m);
  } else {
    TORCH_CHECK(st.handed.defined() && x.is_same(st.handed) && x._version() == st.version,
                "inject: the module at position ", position_,
                " did not receive the tensor that the injected module at position ", st.position,
                " returned (unchanged): the host must pass it on directly, and run the first "
                "injected module first");
    s = st.streams;
  }
  auto in = connection->read(s);
  auto f = call_(in.input, cache);
  if (residual_inside_) f = f - in.input;
  s = connection->write(s, f, in.routing);
  auto out = st.kind == ResidualKind::kHistory
                 ? reduce_streams(s, st.n, st.m, st.kind)
                 : reduce_streams(s, st.n, st.m, st.kind) / double(st.n);
  st.streams = s;
  st.handed = out;
  st.version = out._version();
  st.position = position_;
  return out;
}

namespace {

// The first parameter of m (or of its submodules), if any.
std::optional<torch::Tensor> first_parameter(const torch::nn::Module& m) {
  auto p = m.parameters(/*recurse=*/true);
  if (p.empty()) return std::nullopt;
  return p.front();
}

}  // namespace

std::vector<std::string> inject(torch::nn::Module& root, const ModulePredicate& predicate,
                                const InjectOptions& options) {
  const auto modules = root.named_modules("", /*include_self=*/false);
  std::map<std::string, std::shared_ptr<torch::nn::Module>> by_name;
  for (const auto& item : modules) by_name[item.key()] = item.value();
  auto parent_of = [&](const std::string& parent_name) -> torch::nn::Module& {
    return parent_name.empty() ? root : *by_name.at(parent_name);
  };

  std::vector<std::string> selected;
  for (const auto& item : modules) {
    const auto& name = item.key();
    bool inside = false;
    for (const auto& s : selected) inside = inside || name.rfind(s + ".", 0) == 0;
    if (inside || !predicate(name, *item.value())) continue;
    if (item.value()->as<InjectedModuleImpl>()) {
      throw std::invalid_argument("inject: '" + name + "' is already an injected module");
    }
    selected.push_back(name);
  }
  if (selected.empty()) throw std::invalid_argument("inject: the predicate selected no module");

  // Every slot is checked before the first one changes: a failure leaves the model as it was.
  enum class Slot { kSequential, kTransformerBlock };
  struct Target {
    std::string key;
    torch::nn::Module* parent;
    Slot slot;
  };
  std::vector<Target> targets;
  for (const auto& name : selected) {
    const auto dot = name.rfind('.');
    const std::string parent_name = dot == std::string::npos ? "" : name.substr(0, dot);
    const std::string key = dot == std::string::npos ? name : name.substr(dot + 1);
    auto& parent = parent_of(parent_name);
    if (parent.as<torch::nn::SequentialImpl>()) {
      targets.push_back({key, &parent, Slot::kSequential});
      continue;
    }
    const auto up = parent_name.rfind('.');
    const std::string grandparent_name = up == std::string::npos ? "" : parent_name.substr(0, up);
    if (!parent_name.empty() && parent.as<torch::nn::ModuleListImpl>() &&
        by_name.at(name)->as<SHCBlockImpl>() &&
        parent_of(grandparent_name).as<SHCTransformerImpl>()) {
      if (parent_of(grandparent_name).as<SHCTransformerImpl>()->config().compressed_streams()) {
        throw std::invalid_argument("inject: cannot wrap '" + name +
                                    "': its transformer carries compressed streams (stream_rank "
                                    "< n_streams)");
      }
      targets.push_back({key, &parent, Slot::kTransformerBlock});
      continue;
    }
    throw std::invalid_argument(
        "inject: cannot re-point '" + name + "': its parent " +
        (parent_name.empty() ? std::string("(the root)") : "'" + parent_name + "'") + ", a " +
        parent.name() +
        ", calls it through a typed member; inject wraps elements of torch::nn::Sequential and "
        "the blocks of SHCTransformer");
  }

  auto streams = std::make_shared<InjectedStreams>();
  streams->n = options.num_streams();
  streams->m = options.connections().num_fracs();
  streams->kind = options.connections().kind();
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    const auto& name = selected[i];
    auto original = by_name.at(name);
    // Containers register their elements in order, under their index or (Sequential) a name.
    std::ptrdiff_t index = 0;
    for (const auto& child : t.parent->named_children()) {
      if (child.key() == t.key) break;
      ++index;
    }
    auto place = [&](InjectedModuleImpl::Call call) {
      auto wrapper = std::make_shared<InjectedModuleImpl>(original, std::move(call), options,
                                                          streams, int64_t(i));
      if (auto p = first_parameter(*original)) wrapper->to(p->device(), p->scalar_type());
      t.parent->replace_module(t.key, wrapper);
      return wrapper;
    };
    if (t.slot == Slot::kSequential) {
      auto slot = t.parent->as<torch::nn::SequentialImpl>()->begin() + index;
      auto any = std::make_shared<torch::nn::AnyModule>(std::move(*slot));
      *slot = torch::nn::AnyModule(place([any, name](const torch::Tensor& x, LayerKVCache* cache) {
        TORCH_CHECK(cache == nullptr, "inject: '", name, "' takes no KV cache");
        return any->forward(x);
      }));
    } else {
      auto* block = original->as<SHCBlockImpl>();
      *(t.parent->as<torch::nn::ModuleListImpl>()->begin() + index) =
          place([block](const torch::Tensor& x, LayerKVCache* cache) {
            return block->forward(x, cache);
          });
    }
  }
  return selected;
}

}  // namespace shc
