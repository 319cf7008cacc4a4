// A downstream user of the installed package: build a small SHC model, run a forward pass, and
// save its parameters to a safetensors file and read one back (SHC::checkpoint_files).
#include <shc/checkpoints/safetensors.h>
#include <shc/shc.h>

#include <torch/torch.h>

#include <iostream>

int main() {
  auto cfg = shc::get_config("tiny");
  cfg.n_layers = 2;
  shc::SHCTransformer model(cfg);
  auto logits = model->forward(torch::randint(cfg.vocab_size, {2, 16}));
  if (logits.sizes() != torch::IntArrayRef({2, 16, cfg.vocab_size}) ||
      !torch::isfinite(logits).all().item<bool>()) {
    std::cerr << "unexpected logits " << logits.sizes() << "\n";
    return 1;
  }
  shc::checkpoints::NamedTensors parameters;
  for (const auto& item : model->named_parameters())
    parameters.emplace_back(item.key(), item.value());
  shc::checkpoints::write_safetensors("downstream.safetensors", parameters);
  const shc::checkpoints::SafetensorsFile file("downstream.safetensors");
  if (file.entries().size() != parameters.size() ||
      !torch::equal(file.read(parameters[0].first), parameters[0].second)) {
    std::cerr << "safetensors round trip failed\n";
    return 1;
  }
  std::cout << "downstream OK: " << cfg.summary() << ", " << model->num_parameters()
            << " parameters\n";
  return 0;
}
