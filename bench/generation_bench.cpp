// Per-token generation latency and memory of the SSM student against its SHC teacher at growing
// context lengths (issue 11, SPEC §4.4): the student's recurrent state has a fixed size, so its
// cost per token stays flat, while the teacher's KV cache and attention grow with the context.
//
//   build/bin/generation_bench [--preset tiny] [--contexts 256,1024,4096] [--tokens 32]
//                              [--threads 2] [--out runs/bench/generation.json]
//
// For each context L: the prompt (L random tokens) is consumed first (not timed), then `tokens`
// greedy steps are timed one by one (median ms per token). Memory is what decoding keeps between
// tokens: the teacher's KV cache for L + tokens positions (preallocated, as in generate) and the
// student's state, in bytes of their tensors. Randomly initialised models: speed and memory do
// not depend on the weights. The teacher is the preset with max_seq_len raised to fit.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/bench_util.h"
#include "core/ssm_student.h"
#include "core/transformer.h"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "tiny", contexts_text = "256,1024,4096", out;
  int64_t tokens = 32;
  int threads = 2;
  try {
    shc::bench::parse_options(
        argc, argv,
        "usage: generation_bench [--preset tiny] [--contexts 256,1024,4096] [--tokens 32] "
        "[--threads 2] [--out FILE.json]",
        [&](const std::string& key, const std::string& value) {
          if (key == "--preset")
            preset = value;
          else if (key == "--contexts")
            contexts_text = value;
          else if (key == "--tokens")
            tokens = std::stoll(value);
          else if (key == "--threads")
            threads = std::stoi(value);
          else if (key == "--out")
            out = value;
          else
            return false;
          return true;
        });
  } catch (const shc::bench::HelpRequested& help) {
    std::cout << help.what() << "\n";
    return 0;
  }
  std::vector<int64_t> contexts;
  std::stringstream list(contexts_text);
  for (std::string item; std::getline(list, item, ',');) contexts.push_back(std::stoll(item));
  torch::set_num_threads(threads);
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);

  shc::ModelConfig cfg = shc::get_config(preset);
  for (auto l : contexts) cfg.max_seq_len = std::max(cfg.max_seq_len, l + tokens);
  shc::SHCTransformer teacher(cfg);
  teacher->eval();
  shc::SSMStudent student(shc::SSMConfig::from_teacher_config(cfg));
  student->eval();

  nlohmann::ordered_json report = {{"teacher", cfg.summary()},
                                   {"student", student->config().summary()},
                                   {"threads", threads},
                                   {"tokens_timed", tokens},
                                   {"contexts", nlohmann::ordered_json::array()}};
  std::printf("%8s  %14s %14s  %14s %14s\n", "context", "teacher ms/tok", "student ms/tok",
              "teacher bytes", "student bytes");
  for (const int64_t length : contexts) {
    const auto prompt = torch::randint(0, cfg.vocab_size, {1, length}, torch::kLong);
    auto next_of = [](const torch::Tensor& logits) { return logits.argmax(-1); };  // (1,)

    shc::KVCache cache(cfg, 1, length + tokens, teacher->tok_embeddings->weight.options());
    auto token = next_of(teacher->forward_cached(prompt, cache).select(1, -1));
    std::vector<double> teacher_ms;
    for (int64_t i = 0; i < tokens; ++i) {
      const auto start = Clock::now();
      token = next_of(teacher->forward_cached(token.unsqueeze(1), cache).select(1, -1));
      teacher_ms.push_back(ms_since(start));
    }
    int64_t cache_bytes = 0;
    for (const auto& layer : cache.layers) cache_bytes += layer.k.nbytes() + layer.v.nbytes();

    auto state = student->initial_state(1);
    token = next_of(student->forward_cached(prompt, state).select(1, -1));
    std::vector<double> student_ms;
    for (int64_t i = 0; i < tokens; ++i) {
      const auto start = Clock::now();
      token = next_of(student->step(token, state));
      student_ms.push_back(ms_since(start));
    }
    const double t_ms = shc::bench::median(teacher_ms), s_ms = shc::bench::median(student_ms);
    std::printf("%8lld  %14.3f %14.3f  %14lld %14lld\n", static_cast<long long>(length), t_ms, s_ms,
                static_cast<long long>(cache_bytes), static_cast<long long>(state.bytes()));
    report["contexts"].push_back({{"context", length},
                                  {"teacher_ms_per_token", t_ms},
                                  {"student_ms_per_token", s_ms},
                                  {"teacher_kv_cache_bytes", cache_bytes},
                                  {"student_state_bytes", state.bytes()}});
  }
  if (!out.empty()) {
    std::ofstream file(out);
    file << report.dump(2) << "\n";
    if (!file) {
      std::cerr << "cannot write " << out << "\n";
      return 1;
    }
  }
  return 0;
}
