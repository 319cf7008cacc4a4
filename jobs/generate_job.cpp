// `shc generate --checkpoint PATH --prompt TEXT [--max_new_tokens N --temperature T --top_k K
// --top_p P --seed S --eos true]`: samples a continuation from a trained model (a checkpoint of any
// world size and strategy, a run directory, or an export), streaming the text to stdout as tokens
// arrive; logs (and the tokens/s figure) go to stderr. The tokenizer is the one the training data
// was prepared with, as the checkpoint records it.
#include <torch/torch.h>

#include <boost/log/trivial.hpp>

#include <chrono>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <string>

#include "jobs/job.h"
#include "jobs/model_files.h"

namespace shc::jobs {
namespace {

class GenerateJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    options.add_options()(
        "checkpoint", po::value<std::string>()->required()->value_name("PATH"),
        "a checkpoint directory, a run directory (its latest checkpoint) or an export")(
        "prompt", po::value<std::string>()->value_name("TEXT"), "the prompt")(
        "prompt_file", po::value<std::string>()->value_name("FILE"),
        "read the prompt from a file instead")(
        "max_new_tokens", po::value<int64_t>()->default_value(64)->value_name("N"),
        "tokens to generate at most")("temperature",
                                      po::value<double>()->default_value(1.0)->value_name("T"),
                                      "sampling temperature; 0 = greedy (argmax)")(
        "top_k", po::value<int64_t>()->default_value(0)->value_name("K"),
        "sample among the K most likely tokens (0 = all)")(
        "top_p", po::value<double>()->default_value(1.0)->value_name("P"),
        "sample among the most likely tokens whose mass reaches P (1 = all)")(
        "seed", po::value<uint64_t>()->value_name("S"),
        "sampling seed (the same seed gives the same text; default: a random one)")(
        "eos", po::value<bool>()->default_value(true)->value_name("BOOL"),
        "stop at the tokenizer's end-of-sequence token")(
        "tokenizer_model", po::value<std::string>()->default_value("")->value_name("FILE"),
        "the SentencePiece model, when the one recorded at training has moved");
  }

  int run(const po::variables_map& vm) override {
    if (vm.count("prompt") == vm.count("prompt_file")) {
      throw std::invalid_argument("give exactly one of --prompt and --prompt_file");
    }
    std::string prompt;
    if (vm.count("prompt")) {
      prompt = vm["prompt"].as<std::string>();
    } else {
      const std::string file = vm["prompt_file"].as<std::string>();
      std::ifstream in(file);
      if (!in) throw ExitError(kExitData, "cannot read the prompt file '" + file + "'");
      std::ostringstream text;
      text << in.rdbuf();
      prompt = text.str();
    }
    const StoredModel stored = read_stored_model(vm["checkpoint"].as<std::string>());
    const auto tokenizer = stored_tokenizer(stored, vm["tokenizer_model"].as<std::string>());
    const auto model = load_model(stored);

    std::vector<int64_t> ids;
    for (uint32_t id : tokenizer->encode(prompt)) ids.push_back(int64_t(id));
    if (ids.empty()) throw std::invalid_argument("the prompt is empty");
    GenerationOptions options;
    options.max_new_tokens = vm["max_new_tokens"].as<int64_t>();
    options.temperature = vm["temperature"].as<double>();
    options.top_k = vm["top_k"].as<int64_t>();
    options.top_p = vm["top_p"].as<double>();
    options.seed = vm.count("seed") ? vm["seed"].as<uint64_t>() : std::random_device{}();
    if (vm["eos"].as<bool>()) options.eos_id = tokenizer->eos_id();
    if (options.max_new_tokens < 1) throw std::invalid_argument("--max_new_tokens must be >= 1");
    if (options.temperature < 0) throw std::invalid_argument("--temperature must be >= 0");
    if (!(options.top_p > 0 && options.top_p <= 1)) {
      throw std::invalid_argument("--top_p must be in (0, 1]");
    }
    const int64_t room = model->context_length() - int64_t(ids.size());
    if (room < 1) {
      throw std::invalid_argument("the prompt has " + std::to_string(ids.size()) +
                                  " tokens; the model takes at most " +
                                  std::to_string(model->context_length()));
    }
    if (options.max_new_tokens > room) {
      BOOST_LOG_TRIVIAL(warning) << "--max_new_tokens " << options.max_new_tokens
                                 << " exceeds the model's context after the prompt; generating "
                                 << room;
      options.max_new_tokens = room;
    }

    // Streaming: decode everything generated so far and print what is new, so multi-token
    // characters (SentencePiece pieces, UTF-8 sequences) come out whole.
    std::vector<uint32_t> generated;
    std::string printed;
    int64_t count = 0;
    options.on_token = [&](const torch::Tensor& next) {
      const auto id = next[0].item<int64_t>();
      ++count;
      if (id == options.eos_id) return;
      generated.push_back(uint32_t(id));
      const std::string text = tokenizer->decode(generated);
      if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
        std::cout << text.substr(printed.size()) << std::flush;
        printed = text;
      }
    };
    BOOST_LOG_TRIVIAL(info) << "generating from " << model->summary() << " step " << stored.step
                            << " (" << ids.size() << " prompt tokens, tokenizer "
                            << stored.tokenizer << ", seed " << *options.seed << ")";
    const auto start = std::chrono::steady_clock::now();
    model->generate(torch::tensor(ids, torch::kLong).unsqueeze(0), options);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << std::endl;
    BOOST_LOG_TRIVIAL(info) << count << " tokens in " << seconds << " s ("
                            << double(count) / seconds << " tokens/s, prompt included in the time)";
    return kExitOk;
  }
};

SHC_REGISTER_JOB(GenerateJob, "generate",
                 "sample text from a checkpoint or export, streamed to stdout");

}  // namespace
}  // namespace shc::jobs
