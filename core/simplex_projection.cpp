#include "simplex_projection.h"

#include <torch/torch.h>

#include "precision.h"

namespace shc {

at::Tensor project_to_simplex(const at::Tensor& v) {
  TORCH_CHECK(v.dim() >= 1 && v.size(-1) >= 1, "project_to_simplex: need (..., H) with H >= 1");
  auto x = at_least_fp32(v);
  const int64_t h = x.size(-1);
  auto u = std::get<0>(x.sort(-1, /*descending=*/true));
  auto css = u.cumsum(-1);
  auto j = torch::arange(1, h + 1, x.options());
  // The condition holds on a prefix of the sorted entries; rho is its length (the index of the
  // last entry that holds, so round-off cannot make it a non-prefix). Integer, no gradient.
  auto holds = (u - (css - 1) / j >= 0).detach();
  auto rho = (holds.to(torch::kLong) * torch::arange(1, h + 1, torch::kLong).to(x.device()))
                 .amax(-1, /*keepdim=*/true)
                 .clamp_min(1);
  auto theta = (css.gather(-1, rho - 1) - 1) / rho.to(x.scalar_type());
  return (x - theta).clamp_min(0);
}

at::Tensor project_to_simplex(const at::Tensor& v, int64_t index, double floor) {
  TORCH_CHECK(floor >= 0 && floor < 1, "project_to_simplex: the floor (", floor,
              ") must be in [0, 1)");
  const int64_t h = v.size(-1);
  TORCH_CHECK(index >= 0 && index < h, "project_to_simplex: index ", index, " out of [0, ", h, ")");
  if (floor == 0) return project_to_simplex(v);
  auto x = at_least_fp32(v);
  auto e = torch::zeros({h}, x.options());
  e[index] = floor;
  return e + (1 - floor) * project_to_simplex((x - e) / (1 - floor));
}

}  // namespace shc
