#include "jobs/model_options.h"

#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "jobs/job.h"

namespace shc::jobs {

namespace po = boost::program_options;

namespace {

using Member = std::variant<int64_t ModelConfig::*, double ModelConfig::*, bool ModelConfig::*>;

// One row per overridable field: declaring and applying the options both walk this table, so a
// field cannot be declared without being applied. residual is a string and handled on its own.
struct Field {
  const char* name;
  Member member;
  const char* help;
  // Added after the first checkpoints were written: a stored config without it means the default.
  bool optional = false;
};

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      {"vocab_size", &ModelConfig::vocab_size, "vocabulary size"},
      {"hidden_dim", &ModelConfig::hidden_dim, "hidden size d"},
      {"n_layers", &ModelConfig::n_layers, "transformer blocks"},
      {"n_heads", &ModelConfig::n_heads, "attention heads"},
      {"n_kv_heads", &ModelConfig::n_kv_heads, "key/value heads, 0 = n_heads (no GQA)"},
      {"ffn_dim", &ModelConfig::ffn_dim, "feed-forward hidden size"},
      {"max_seq_len", &ModelConfig::max_seq_len, "longest sequence (RoPE table, KV cache)"},
      {"rope_base", &ModelConfig::rope_base, "rotary embedding base"},
      {"norm_eps", &ModelConfig::norm_eps, "RMSNorm epsilon"},
      {"tie_embeddings", &ModelConfig::tie_embeddings, "share input embedding and output head"},
      {"n_streams", &ModelConfig::n_streams,
       "residual streams n (hc, mhc, shc); the window of states (history)"},
      {"k_mixture", &ModelConfig::k_mixture, "orthogonal bases K per sublayer (shc)"},
      {"top_k", &ModelConfig::top_k, "bases kept per token, top_k < K is sparse (shc)"},
      {"sinkhorn_iters", &ModelConfig::sinkhorn_iters, "Sinkhorn-Knopp iterations (mhc)"},
      {"routing_init_scale", &ModelConfig::routing_init_scale,
       "init std of the routing parameters and dynamic-projection scale"},
      {"stream_offsets", &ModelConfig::stream_offsets, "learned per-stream offset of S0"},
      {"stream_rank", &ModelConfig::stream_rank,
       "carry a rank-r state between blocks, 0 = off (full n streams)"},
      {"adaptive_rank", &ModelConfig::adaptive_rank, "per-token effective rank n_eff (shc)"},
      {"rank_hidden", &ModelConfig::rank_hidden, "width of the rank selector's MLP"},
      {"rank_tau_start", &ModelConfig::rank_tau_start, "initial Gumbel-softmax temperature"},
      {"rank_tau_min", &ModelConfig::rank_tau_min, "final Gumbel-softmax temperature"},
      {"history_floor", &ModelConfig::history_floor,
       "identity floor: the latest state's weight is at least this, in [0, 1) (history)", true},
      {"history_tau", &ModelConfig::history_tau,
       "Gumbel-softmax temperature of the window weights in training, 0 = off (history)", true},
      {"history_detach", &ModelConfig::history_detach,
       "gradient only through the latest state, not the older window (history)", true},
  };
  return table;
}

std::string show(const ModelConfig& c, const Member& member) {
  std::ostringstream s;
  std::visit(
      [&](auto m) {
        if constexpr (std::is_same_v<decltype(m), bool ModelConfig::*>) {
          s << (c.*m ? "true" : "false");
        } else {
          s << c.*m;
        }
      },
      member);
  return s.str();
}

// "(default: 4)" when every preset agrees, else "(preset: tiny=128, small=512, ...)". Computed
// from get_config so the help cannot drift from the presets.
template <typename Get>
std::string default_note(Get get) {
  std::vector<std::pair<std::string, std::string>> values;
  bool same = true;
  for (const auto& name : preset_names()) {
    values.emplace_back(name, get(get_config(name)));
    same = same && values.back().second == values.front().second;
  }
  if (same) return " (default: " + values.front().second + ")";
  std::string note = " (preset:";
  for (const auto& [preset, value] : values) note += " " + preset + "=" + value;
  return note + ")";
}

po::value_semantic* semantic(const Member& member) {
  return std::visit(
      [](auto m) -> po::value_semantic* {
        if constexpr (std::is_same_v<decltype(m), int64_t ModelConfig::*>) {
          return po::value<int64_t>()->value_name("INT");
        } else if constexpr (std::is_same_v<decltype(m), double ModelConfig::*>) {
          return po::value<double>()->value_name("FLOAT");
        } else {
          return po::value<bool>()->value_name("BOOL");
        }
      },
      member);
}

}  // namespace

void add_model_options(po::options_description& options) {
  po::options_description model("model options (a preset, then the fields given override it)",
                                kHelpLineLength, kHelpLineLength / 2);
  std::string presets;
  for (const auto& name : preset_names()) presets += (presets.empty() ? "" : ", ") + name;
  auto add = model.add_options();
  add("model.preset", po::value<std::string>()->default_value("tiny")->value_name("NAME"),
      ("model shape preset: " + presets).c_str());
  add("model.residual", po::value<std::string>()->value_name("KIND"),
      ("residual connection: residual, hc, mhc, shc or history" +
       default_note([](const ModelConfig& c) {
         return to_string(c.residual);
       })).c_str());
  for (const auto& f : fields()) {
    add(("model." + std::string(f.name)).c_str(), semantic(f.member),
        (f.help + default_note([&](const ModelConfig& c) { return show(c, f.member); })).c_str());
  }
  options.add(model);
}

ModelConfig model_config_from(const po::variables_map& vm) {
  ModelConfig config = get_config(vm["model.preset"].as<std::string>());
  if (vm.count("model.residual")) {
    config.residual = parse_residual_kind(vm["model.residual"].as<std::string>());
  }
  for (const auto& f : fields()) {
    const auto it = vm.find("model." + std::string(f.name));
    if (it == vm.end() || it->second.empty()) continue;
    std::visit(
        [&](auto m) {
          using T = std::remove_reference_t<decltype(config.*m)>;
          config.*m = it->second.as<T>();
        },
        f.member);
  }
  config.validate();
  return config;
}

nlohmann::json model_config_to_json(const ModelConfig& config) {
  nlohmann::json j = {{"name", config.name}, {"residual", to_string(config.residual)}};
  for (const auto& f : fields()) {
    std::visit([&](auto m) { j[f.name] = config.*m; }, f.member);
  }
  return j;
}

ModelConfig model_config_from_json(const nlohmann::json& j) {
  ModelConfig config;
  try {
    config.name = j.at("name").get<std::string>();
    config.residual = parse_residual_kind(j.at("residual").get<std::string>());
    for (const auto& f : fields()) {
      if (f.optional && !j.contains(f.name)) continue;
      std::visit(
          [&](auto m) {
            using T = std::remove_reference_t<decltype(config.*m)>;
            config.*m = j.at(f.name).get<T>();
          },
          f.member);
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("model config: ") + e.what());
  }
  config.validate();
  return config;
}

nlohmann::json ssm_config_to_json(const SSMConfig& c) {
  return {
      {"name", c.name},         {"vocab_size", c.vocab_size}, {"hidden_dim", c.hidden_dim},
      {"n_layers", c.n_layers}, {"state_dim", c.state_dim},   {"conv_kernel", c.conv_kernel},
      {"expand", c.expand},     {"dt_rank", c.dt_rank},       {"dt_min", c.dt_min},
      {"dt_max", c.dt_max},     {"norm_eps", c.norm_eps},     {"tie_embeddings", c.tie_embeddings}};
}

SSMConfig ssm_config_from_json(const nlohmann::json& j) {
  SSMConfig c;
  try {
    c.name = j.at("name").get<std::string>();
    c.vocab_size = j.at("vocab_size").get<int64_t>();
    c.hidden_dim = j.at("hidden_dim").get<int64_t>();
    c.n_layers = j.at("n_layers").get<int64_t>();
    c.state_dim = j.at("state_dim").get<int64_t>();
    c.conv_kernel = j.at("conv_kernel").get<int64_t>();
    c.expand = j.at("expand").get<int64_t>();
    c.dt_rank = j.at("dt_rank").get<int64_t>();
    c.dt_min = j.at("dt_min").get<double>();
    c.dt_max = j.at("dt_max").get<double>();
    c.norm_eps = j.at("norm_eps").get<double>();
    c.tie_embeddings = j.at("tie_embeddings").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("SSM student config: ") + e.what());
  }
  c.validate();
  return c;
}

}  // namespace shc::jobs
