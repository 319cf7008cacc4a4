#include "ssm_config.h"

#include <sstream>
#include <stdexcept>

namespace shc {

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument("invalid SSM config: " + message);
}

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

void SSMConfig::validate() const {
  require(vocab_size >= 2, "vocab_size (" + num(vocab_size) + ") must be at least 2");
  require(hidden_dim >= 1, "hidden_dim (" + num(hidden_dim) + ") must be positive");
  require(n_layers >= 1, "n_layers (" + num(n_layers) + ") must be positive");
  require(state_dim >= 1, "state_dim (" + num(state_dim) + ") must be positive");
  require(conv_kernel >= 1, "conv_kernel (" + num(conv_kernel) + ") must be positive");
  require(expand >= 1, "expand (" + num(expand) + ") must be positive");
  require(dt_rank >= 0, "dt_rank (" + num(dt_rank) + ") must be positive or 0 (= ceil(d / 16))");
  require(dt_min > 0 && dt_min <= dt_max,
          "dt_min (" + num(dt_min) + ") must be positive and at most dt_max (" + num(dt_max) + ")");
  require(norm_eps > 0, "norm_eps must be positive");
}

std::string SSMConfig::summary() const {
  std::ostringstream s;
  s << name << ": mamba d=" << hidden_dim << " L=" << n_layers << " N=" << state_dim
    << " expand=" << expand << " conv=" << conv_kernel << " dt_rank=" << resolved_dt_rank()
    << " vocab=" << vocab_size << (tie_embeddings ? "" : " untied");
  return s.str();
}

SSMConfig SSMConfig::from_teacher_config(const ModelConfig& teacher) {
  SSMConfig c;
  c.name = teacher.name + "-ssm";
  c.vocab_size = teacher.vocab_size;
  c.hidden_dim = teacher.hidden_dim;
  c.n_layers = teacher.n_layers;
  c.norm_eps = teacher.norm_eps;
  c.tie_embeddings = teacher.tie_embeddings;
  return c;
}

}  // namespace shc
