// 64-byte vectors for the hand-written CPU kernels (stream_kernels.cpp, routing/sinkhorn.cpp): GCC
// vector types that each target clone lowers to its own registers. Internal to those kernel
// files (not installed); nothing here is part of an interface.
#pragma once

#include <cstdint>

// A kernel's token-range function is compiled three times and picked once at load time by the
// CPU's features (GCC function multiversioning): AVX-512, AVX2 or baseline x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SHC_VECTORISED __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SHC_VECTORISED
#endif
#define SHC_INLINE inline __attribute__((always_inline))
// Vec<T> values cross no call boundary (every helper taking or returning one is always inlined),
// so GCC's note that their ABI differs between the target clones does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace shc::kernels {

// One 64-byte vector of T (GCC vector extension): one AVX-512 register, two AVX2 or four SSE
// registers, as each target clone lowers it.
template <typename T>
struct VectorOf {
  typedef T type __attribute__((vector_size(64), aligned(sizeof(T))));
};
template <typename T>
using Vec = typename VectorOf<T>::type;

template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);

template <typename T>
SHC_INLINE Vec<T> load(const T* p) {
  return *reinterpret_cast<const Vec<T>*>(p);
}

template <typename T>
SHC_INLINE void store(T* p, Vec<T> v) {
  *reinterpret_cast<Vec<T>*>(p) = v;
}

// A vector's lanes reduced by pairwise halving (lane l op lane l + w for w = L/2, ..., 1): a fixed
// order, so results do not depend on how tokens are split between threads, and log2(L) dependent
// steps where a running reduction would chain L of them. Each step combines the vector's upper
// half with its lower half as vectors of half the size, so the reduction stays in registers
// (indexing lanes one by one made GCC go through the stack, a store and a reload per lane).
template <typename T, int Bytes>
struct Halving {
  typedef T type __attribute__((vector_size(Bytes), aligned(sizeof(T))));
  template <typename Op>
  static SHC_INLINE T reduce(type v, Op op) {
    if constexpr (Bytes == sizeof(T)) {
      return v[0];
    } else {
      typename Halving<T, Bytes / 2>::type low, high;
      __builtin_memcpy(&low, &v, Bytes / 2);
      __builtin_memcpy(&high, reinterpret_cast<const char*>(&v) + Bytes / 2, Bytes / 2);
      return Halving<T, Bytes / 2>::reduce(op(low, high), op);
    }
  }
};

// The combining steps, as functors whose call is always inlined like every other helper here (a
// lambda's call is inlined only when the optimiser chooses to, and the Vec halves must not cross
// a call between a target clone and baseline code).
struct Plus {
  template <typename V>
  SHC_INLINE V operator()(V a, V b) const {
    return a + b;
  }
};
struct Min {
  template <typename V>
  SHC_INLINE V operator()(V a, V b) const {
    return a < b ? a : b;
  }
};
struct Max {
  template <typename V>
  SHC_INLINE V operator()(V a, V b) const {
    return a > b ? a : b;
  }
};

template <typename T>
SHC_INLINE T lane_sum(Vec<T> v) {
  return Halving<T, sizeof(Vec<T>)>::reduce(v, Plus{});
}

template <typename T>
SHC_INLINE T lane_min(Vec<T> v) {
  return Halving<T, sizeof(Vec<T>)>::reduce(v, Min{});
}

template <typename T>
SHC_INLINE T lane_max(Vec<T> v) {
  return Halving<T, sizeof(Vec<T>)>::reduce(v, Max{});
}

}  // namespace shc::kernels
