// The model.* options every model-building job shares: a preset (core/config.h get_config) plus
// optional per-field overrides, e.g. `--model.preset small --model.residual mhc`.
#pragma once

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/ssm_config.h"

namespace shc::jobs {

// Declares model.preset (default "tiny") and one option per ModelConfig field, "model.<field>".
// Field options have no default value, so only fields given explicitly override the preset;
// their help text shows the preset values they otherwise take.
void add_model_options(boost::program_options::options_description& options);

// get_config(model.preset), then every given model.<field>, then validate(). Throws
// std::invalid_argument (an unknown preset or residual kind, or an invalid combination).
ModelConfig model_config_from(const boost::program_options::variables_map& vm);

// The config as JSON, {"name": ..., "residual": "shc", "<field>": value, ...} for every field of
// the model.* options (checkpoint manifests, exports), and back. model_config_from_json throws
// std::invalid_argument naming a missing or mistyped field, then validates.
nlohmann::json model_config_to_json(const ModelConfig& config);
ModelConfig model_config_from_json(const nlohmann::json& j);
// The same for the SSM student's config (every field of SSMConfig).
nlohmann::json ssm_config_to_json(const SSMConfig& config);
SSMConfig ssm_config_from_json(const nlohmann::json& j);

}  // namespace shc::jobs
