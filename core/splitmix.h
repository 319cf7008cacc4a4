// splitmix64 (Steele, Lea and Flood 2014, "Fast splittable pseudorandom number generators"): its
// output function is a bijective 64-bit mix whose outputs for consecutive inputs pass BigCrush.
// The model's per-unit seeds and the counter-based Gumbel noise both turn counters into random
// bits with it.
#pragma once

#include <cstdint>

namespace shc {

// The increment of splitmix64's state: 2^64 / the golden ratio, odd.
inline constexpr std::uint64_t kSplitmixGamma = 0x9e3779b97f4a7c15ULL;

inline std::uint64_t splitmix64_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace shc
