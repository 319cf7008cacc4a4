// The model.* options every model-building job shares: a preset (core/config.h get_config) plus
// optional per-field overrides, e.g. `--model.preset small --model.residual mhc`.
#pragma once

#include <boost/program_options.hpp>

#include "core/config.h"

namespace shc::jobs {

// Declares model.preset (default "tiny") and one option per ModelConfig field, "model.<field>".
// Field options have no default value, so only fields given explicitly override the preset;
// their help text shows the preset values they otherwise take.
void add_model_options(boost::program_options::options_description& options);

// get_config(model.preset), then every given model.<field>, then validate(). Throws
// std::invalid_argument (an unknown preset or residual kind, or an invalid combination).
ModelConfig model_config_from(const boost::program_options::variables_map& vm);

}  // namespace shc::jobs
