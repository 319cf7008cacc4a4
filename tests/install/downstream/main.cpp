// A downstream user of the installed package: build a small SHC model and run a forward pass.
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
  std::cout << "downstream OK: " << cfg.summary() << ", " << model->num_parameters()
            << " parameters\n";
  return 0;
}
