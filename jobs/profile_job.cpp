// `shc profile`: where the time goes. Two measurements:
//   shc profile --routing-bench --out FILE.json   H_res construction per token, every kind (§12)
//   shc profile [--model.* ...] [--out FILE.json] forward, forward+backward and KV-cached
//                                                 generation throughput of one model
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <boost/log/trivial.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/transformer.h"
#include "jobs/job.h"
#include "jobs/model_options.h"
#include "jobs/routing_bench.h"

namespace shc::jobs {
namespace {

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option) {
  std::vector<int64_t> values;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ',')) {
    try {
      size_t used = 0;
      values.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw std::invalid_argument(option + ": '" + text +
                                  "' is not a comma-separated list of integers");
    }
  }
  return values;
}

// Writes via a temporary file and a rename, so a reader never sees half a report.
void write_report(const std::string& path, const std::string& text) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const fs::path tmp = target.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << text;
    if (!out.flush()) throw ExitError(kExitData, "cannot write " + tmp.string());
  }
  fs::rename(tmp, target);
  BOOST_LOG_TRIVIAL(info) << "wrote " << path;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

class ProfileJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    options.add_options()(
        "routing-bench", po::bool_switch(),
        "run the routing micro-benchmark (SHC vs mHC Sinkhorn-10/20 vs HC) instead of the model "
        "profile")("out", po::value<std::string>(), "write the report as JSON to this file")(
        "profile.device", po::value<std::string>()->default_value("cpu"),
        "model profile: cpu or cuda[:N]")("profile.threads", po::value<int>()->default_value(0),
                                          "intra-op threads (0 = LibTorch's default)")(
        "profile.tokens", po::value<int64_t>()->default_value(4096), "routing bench: tokens T")(
        "profile.hidden", po::value<int64_t>()->default_value(1024),
        "routing bench: hidden size d")("profile.streams",
                                        po::value<std::string>()->default_value("2,4,8,16"),
                                        "routing bench: stream counts n")(
        "profile.repeats", po::value<int64_t>()->default_value(10),
        "timed repetitions per case (medians are reported)")("profile.batch",
                                                             po::value<int64_t>()->default_value(4),
                                                             "model profile: sequences per batch")(
        "profile.seq_len", po::value<int64_t>()->default_value(128),
        "model profile: tokens per sequence")(
        "profile.generate_tokens", po::value<int64_t>()->default_value(32),
        "model profile: tokens generated per sequence with the KV cache");
    add_model_options(options);
  }

  int run(const po::variables_map& vm) override {
    if (int threads = vm["profile.threads"].as<int>(); threads > 0) torch::set_num_threads(threads);
    const std::string out = vm.count("out") ? vm["out"].as<std::string>() : "";
    std::string report = vm["routing-bench"].as<bool>() ? routing_bench(vm) : model_profile(vm);
    if (out.empty()) {
      std::cout << report;
    } else {
      write_report(out, report);
    }
    return kExitOk;
  }

 private:
  static std::string routing_bench(const po::variables_map& vm) {
    RoutingBenchOptions o;
    o.tokens = vm["profile.tokens"].as<int64_t>();
    o.hidden = vm["profile.hidden"].as<int64_t>();
    o.streams = parse_int_list(vm["profile.streams"].as<std::string>(), "profile.streams");
    o.repeats = vm["profile.repeats"].as<int64_t>();
    BOOST_LOG_TRIVIAL(info) << "routing benchmark: T=" << o.tokens << " d=" << o.hidden
                            << " threads=" << torch::get_num_threads();
    auto results = run_routing_bench(o);
    for (int64_t n : o.streams) {
      for (bool proj : {false, true}) {
        BOOST_LOG_TRIVIAL(info) << "n=" << n << (proj ? " with projection" : " H_res only")
                                << ": mHC-20 / SHC = "
                                << routing_bench_ratio(results, "mhc", 20, n, "fwd_bwd", proj)
                                << "x (fwd+bwd), "
                                << routing_bench_ratio(results, "mhc", 20, n, "fwd", proj)
                                << "x (fwd)";
      }
    }
    return routing_bench_json(o, results);
  }

  static std::string model_profile(const po::variables_map& vm) {
    const auto cfg = model_config_from(vm);
    const int64_t batch = vm["profile.batch"].as<int64_t>();
    const int64_t seq = vm["profile.seq_len"].as<int64_t>();
    const int64_t gen = vm["profile.generate_tokens"].as<int64_t>();
    const int64_t repeats = vm["profile.repeats"].as<int64_t>();
    if (batch < 1 || seq < 2 || gen < 0 || repeats < 1 || seq + gen > cfg.max_seq_len) {
      throw std::invalid_argument(
          "profile needs batch >= 1, repeats >= 1, 2 <= seq_len and seq_len + generate_tokens <= "
          "model.max_seq_len (" +
          std::to_string(cfg.max_seq_len) + ")");
    }
    const torch::Device device(vm["profile.device"].as<std::string>());
    if (device.is_cuda() && !torch::cuda::is_available()) {
      throw ExitError(kExitUsage,
                      "profile.device is " + device.str() + " but no CUDA device is available");
    }
    torch::manual_seed(0);
    SHCTransformer model(cfg);
    model->to(device);
    BOOST_LOG_TRIVIAL(info) << cfg.summary() << ": " << model->num_parameters() << " parameters";
    nlohmann::ordered_json report = {{"model", cfg.summary()}};
    for (const auto& [part, count] : model->parameter_breakdown()) {
      BOOST_LOG_TRIVIAL(info) << "  " << part << ": " << count;
      report["parameters"][part] = count;
    }
    report["parameters"]["total"] = model->num_parameters();

    auto ids =
        torch::randint(cfg.vocab_size, {batch, seq}, torch::dtype(torch::kLong).device(device));
    const double tokens = double(batch * seq);
    auto time_tokens_per_s = [&](auto&& step) {
      step();  // warm-up
      if (device.is_cuda()) torch::cuda::synchronize();
      auto start = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < repeats; ++i) step();
      if (device.is_cuda()) torch::cuda::synchronize();
      return tokens * double(repeats) / seconds_since(start);
    };
    model->eval();
    const double fwd = time_tokens_per_s([&] {
      torch::NoGradGuard g;
      model->forward(ids);
    });
    model->train();
    const double fwd_bwd = time_tokens_per_s([&] {
      model->zero_grad();
      auto loss = model->forward(ids, ids);
      loss.backward();
    });
    double gen_rate = 0;
    if (gen > 0) {
      GenerationOptions o;
      o.max_new_tokens = gen;
      o.do_sample = false;
      auto prompt = ids.narrow(1, 0, seq / 2);
      auto start = std::chrono::steady_clock::now();
      model->generate(prompt, o);
      gen_rate = double(batch * gen) / seconds_since(start);
    }
    BOOST_LOG_TRIVIAL(info) << "forward " << fwd << " tokens/s, forward+backward " << fwd_bwd
                            << " tokens/s, cached generation " << gen_rate << " tokens/s (batch "
                            << batch << ", seq " << seq << ", threads " << torch::get_num_threads()
                            << ")";
    report["device"] = device.str();
    report["batch"] = batch;
    report["seq_len"] = seq;
    report["threads"] = torch::get_num_threads();
    report["forward_tokens_per_s"] = fwd;
    report["forward_backward_tokens_per_s"] = fwd_bwd;
    report["generate_tokens_per_s"] = gen_rate;
    return report.dump(2) + "\n";
  }
};

SHC_REGISTER_JOB(ProfileJob, "profile",
                 "throughput of a model, or the routing micro-benchmark (--routing-bench)");

}  // namespace
}  // namespace shc::jobs
