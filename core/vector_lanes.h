// 64-byte vectors for the hand-written CPU kernels in core/ (stream_kernels.cpp, the rotary,
// SwiGLU and RMSNorm kernels, routing/sinkhorn.cpp): GCC vector types that each target clone
// lowers to its own registers. Internal to those kernel files (not installed); nothing here is
// part of an interface.
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
// aligned(sizeof(T)) lowers the vector's alignment to its element's, so load and store below may
// take any element pointer (GCC then emits unaligned moves).
static_assert(alignof(Vec<float>) == alignof(float) && alignof(Vec<double>) == alignof(double));

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

// <a, b> over d values: lane sums over the full vectors, then their lane_sum, then the tail in
// order (a fixed order, like every sum here).
template <typename T>
SHC_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t d) {
  Vec<T> lanes = {};
  int64_t e = 0;
  for (; e + kLanes<T> <= d; e += kLanes<T>) lanes += load(a + e) * load(b + e);
  T sum = lane_sum<T>(lanes);
  for (; e < d; ++e) sum += a[e] * b[e];
  return sum;
}

// Lane-wise exp, to about 2 ulp (float) or 1e-14 relative (double); inputs clamped to the
// range whose results are finite normal numbers ([-87.3, 88] or [-708, 709]), so exp of a very
// negative input is the smallest normal number rather than 0. Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2 / 2, then exp(r) by polynomial (float: Cephes expf's minimax coefficients; double:
// Taylor to r^11, whose remainder is below 1e-14 there), times 2^n built in the exponent bits.
template <typename T>
struct ExpConstants;
template <>
struct ExpConstants<float> {
  using Int = int32_t;
  static constexpr float lo = -87.33654f, hi = 88.0f;
  static constexpr float round = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr int shift = 23, bias = 127;
};
template <>
struct ExpConstants<double> {
  using Int = int64_t;
  static constexpr double lo = -708.0, hi = 709.0;
  static constexpr double round = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double ln2_hi = 6.93145751953125e-1, ln2_lo = 1.42860682030941723212e-6;
  static constexpr int shift = 52, bias = 1023;
};

template <typename T>
SHC_INLINE Vec<T> exp(Vec<T> x) {
  using C = ExpConstants<T>;
  typedef typename C::Int IntVec __attribute__((vector_size(64), aligned(sizeof(T))));
  constexpr T log2e = T(1.4426950408889634);
  x = x < C::lo ? Vec<T>{} + C::lo : x;
  x = x > C::hi ? Vec<T>{} + C::hi : x;
  const Vec<T> n = (x * log2e + C::round) - C::round;
  const Vec<T> r = (x - n * C::ln2_hi) - n * C::ln2_lo;
  Vec<T> p;
  if constexpr (sizeof(T) == 4) {
    p = Vec<T>{} + T(1.9875691500e-4);
    p = p * r + T(1.3981999507e-3);
    p = p * r + T(8.3334519073e-3);
    p = p * r + T(4.1665795894e-2);
    p = p * r + T(1.6666665459e-1);
    p = p * r + T(5.0000001201e-1);
    p = p * r * r + r + T(1);
  } else {
    // 1 + r (1 + r/2 (1 + r/3 (... (1 + r/11)))), innermost first.
    p = r * T(1.0 / 11) + T(1);
    for (int k = 10; k >= 1; --k) p = p * r * (T(1) / T(k)) + T(1);
  }
  // A NaN input passed both clamps and made n NaN (p is NaN already): convert 0 in its place, as
  // converting NaN to an integer is undefined.
  const IntVec bits = (__builtin_convertvector(n == n ? n : Vec<T>{}, IntVec) + C::bias)
                      << C::shift;
  Vec<T> two_to_n;
  __builtin_memcpy(&two_to_n, &bits, sizeof(bits));
  return p * two_to_n;
}

// 1 / (1 + exp(-x)), lane-wise.
template <typename T>
SHC_INLINE Vec<T> sigmoid(Vec<T> x) {
  return T(1) / (T(1) + exp<T>(-x));
}

}  // namespace shc::kernels
