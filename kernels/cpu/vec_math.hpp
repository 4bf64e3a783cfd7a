// Vectorisable float math for the CPU's hot pointwise loops: exp, sigmoid and SiLU (and their derivatives)
// written with plain arithmetic and bit operations only — no libm call, no branch — so that an `omp simd`
// loop over them compiles to packed instructions (libm's expf is a scalar call that blocks vectorisation and
// made the fused BN+SiLU of EfficientNet cost more than its convolutions).
//
// exp_fast(float): the classic range reduction x = n·ln2 + r with |r| <= ln2/2 (ln2 split in a short high
// part and a correction, so n·ln2_hi is exact), a degree-6 minimax polynomial for e^r on that interval, and
// 2^n assembled in the exponent bits. Accuracy: <= 2 ulp over the normal range (tests/ops/test_vec_math.cpp
// checks every 1021st bit pattern of [-87, 88.7] against std::exp in double); below -87.33 the result is 0 (the
// true value is subnormal), above log(FLT_MAX) ≈ 88.72 it is +inf, NaN in gives NaN out.
//
// Vectorisation needs AVX2-class instructions (GCC does not vectorise this with plain SSE2): the project's
// benchmarks and examples build with -march=native; a library consumer picks its own flags.
//
// The `act_*` templates pick exp_fast for float and libm for double, so float kernels are fast and the
// double path (used by gradcheck) keeps libm's last-bit accuracy.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/common/activation_math.hpp"

namespace arclight::kernels::cpu {

inline float exp_fast(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;       // few mantissa bits: n * kLn2Hi is exact for |n| <= 128
  constexpr float kLn2Lo = -2.12194440e-4f;    // ln2 - kLn2Hi
  constexpr float kHi = 88.7228391116729996f;  // log(FLT_MAX): above, the result overflows
  constexpr float kLo = -87.3365447504f;       // below: the result would be subnormal; flushed to 0
  const float xc = std::min(std::max(x, kLo), kHi);
  // n = round(x·log2 e): adding and removing 1.5·2^23 rounds to the nearest integer in the FPU's mode
  // (|t| < 2^22 here), with no float → int conversion in the rounding itself.
  const float t = xc * kLog2e;
  const float fn = (t + 12582912.0f) - 12582912.0f;
  const std::int32_t n = static_cast<std::int32_t>(fn);
  const float r = (xc - fn * kLn2Hi) - fn * kLn2Lo;
  // e^r on |r| <= ln2/2: 1 + r + r²·P(r), P a degree-5 polynomial (minimax coefficients).
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * (r * r) + r + 1.0f;
  // 2^n as two normal halves 2^(n/2)·2^(n - n/2): n reaches 128 near the top of the range.
  const std::int32_t n1 = n >> 1, n2 = n - n1;
  const float s1 = std::bit_cast<float>(static_cast<std::int32_t>((n1 + 127) << 23));
  const float s2 = std::bit_cast<float>(static_cast<std::int32_t>((n2 + 127) << 23));
  float y = (er * s1) * s2;
  y = x < kLo ? 0.0f : y;
  y = x > kHi ? std::numeric_limits<float>::infinity() : y;
  return x != x ? x : y;  // NaN propagates
}

// The overload set the act_* templates use: fast for float, libm for double.
inline float exp_act(float x) { return exp_fast(x); }
inline double exp_act(double x) { return std::exp(x); }

// sigmoid(x) = 1/(1 + e^-x), evaluated from e = e^-|x| so nothing overflows: 1/(1+e) for x >= 0, e/(1+e) else.
template <typename T>
inline T act_sigmoid(T x) {
  const T e = exp_act(-(x < T(0) ? -x : x));
  const T s = T(1) / (T(1) + e);
  return x >= T(0) ? s : e * s;
}
template <typename T>
inline T act_sigmoid_grad(T x) {
  const T s = act_sigmoid(x);
  return s * (T(1) - s);
}
template <typename T>
inline T act_silu(T x) {
  return x * act_sigmoid(x);
}
template <typename T>
inline T act_silu_grad(T x) {
  const T s = act_sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

}  // namespace arclight::kernels::cpu
