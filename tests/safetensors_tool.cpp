// Test helper for tests/safetensors_interop.py: the C++ side of the interoperability checks with
// Python's `safetensors` package.
//
//   safetensors_tool write PATH   writes the fixed tensors and metadata the script expects
//   safetensors_tool dump PATH    prints a file as JSON: {"metadata": {...}, "tensors": {name:
//                                 {"dtype": LibTorch's name, "shape": [...], "values": [...]}}}
//                                 with the values flattened (doubles, or integers for integer
//                                 and bool dtypes); tensors in buffer order
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>

#include "checkpoints/errors.h"
#include "checkpoints/safetensors.h"

namespace {

using shc::checkpoints::NamedTensors;

void write(const std::string& path) {
  const NamedTensors tensors = {
      // An odd number of 2-byte elements first: the tensors after it start at odd offsets.
      {"bf16", torch::tensor({1.5, -2.25, 3.0}).to(torch::kBFloat16)},
      {"f32", torch::arange(12, torch::kFloat).reshape({3, 4}) * 0.5 - 1},
      {"i64", torch::tensor({std::numeric_limits<int64_t>::min(), int64_t{0}, int64_t{1} << 40,
                             std::numeric_limits<int64_t>::max()})},
      {"f32_transposed", torch::arange(6, torch::kFloat).reshape({2, 3}).t()},
      {"f32_scalar", torch::tensor(2.5f)},
  };
  shc::checkpoints::write_safetensors(path, tensors,
                                      {{"format", "pt"}, {"config", R"({"d": 128})"}});
}

void dump(const std::string& path) {
  const shc::checkpoints::SafetensorsFile file(path);
  nlohmann::ordered_json out = {{"metadata", file.metadata()},
                                {"tensors", nlohmann::ordered_json::object()}};
  for (const auto& entry : file.entries()) {
    const torch::Tensor tensor = file.read(entry.name).flatten();
    nlohmann::ordered_json values = nlohmann::ordered_json::array();
    const bool integral = !torch::isFloatingType(entry.dtype);
    const torch::Tensor wide = tensor.to(integral ? torch::kLong : torch::kDouble);
    for (int64_t i = 0; i < wide.numel(); ++i) {
      if (integral) {
        values.push_back(wide[i].item<int64_t>());
      } else {
        values.push_back(wide[i].item<double>());
      }
    }
    out["tensors"][entry.name] = {
        {"dtype", c10::toString(entry.dtype)}, {"shape", entry.shape}, {"values", values}};
  }
  std::cout << out.dump() << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || (std::strcmp(argv[1], "write") != 0 && std::strcmp(argv[1], "dump") != 0)) {
    std::fprintf(stderr, "usage: safetensors_tool write|dump PATH\n");
    return 2;
  }
  try {
    std::strcmp(argv[1], "write") == 0 ? write(argv[2]) : dump(argv[2]);
  } catch (const shc::checkpoints::CheckpointError& e) {
    std::fprintf(stderr, "safetensors_tool: %s\n", e.what());
    return 3;
  }
  return 0;
}
