// IEEE-754 binary16 ("half", fp16) <-> float32 conversion on the bit level, written once for the host compiler and
// nvcc (ARCLIGHT_HOST_DEVICE) so the CUDA conversion kernel (kernels/cuda/elementwise.cuh, ew_convert), the CUDA
// emulator's cuBLAS/cuDNN stand-ins and the host-side references of the tests produce identical bits. Integer
// arithmetic only (no __half intrinsics, no float rounding modes), so the result never depends on the compiler,
// flush-to-zero flags or the device. fp16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits; largest finite
// 65504, smallest normal 2^-14, smallest subnormal 2^-24.
//   float -> f16: round to nearest, ties to even, subnormals included (so values in [2^-25, 2^-14) become f16
//     subnormals and anything at or below 2^-25 becomes ±0); magnitudes >= 65520 (65504 + half an ulp: the tie goes
//     to the even neighbour, which is infinity) become ±inf; any NaN becomes a quiet NaN with the same sign and the
//     top 9 payload bits kept.
//   f16 -> float: exact (every f16 value is a float); NaN stays NaN (payload shifted into place), ±inf stays ±inf.
// The bf16 twin is kernels/common/bf16_math.hpp (whose float_to_bits / bits_to_float this header reuses).
#pragma once

#include <stdint.h>

#include "kernels/common/bf16_math.hpp"
#include "kernels/common/macros.hpp"

namespace arclight::kernels {

// float -> f16 bits, round to nearest even (see the file comment for the special cases).
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE uint16_t float_to_f16_bits(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;  // |f|
  if (a > 0x7F800000u) return uint16_t(sign | 0x7E00u | ((a >> 13) & 0x03FFu));  // NaN: quiet bit set, payload top
  if (a >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // >= 65520 (and inf): rounds to infinity
  if (a >= 0x38800000u) {                                  // >= 2^-14: a normal f16 (or 65504 after rounding)
    // Rebias the exponent (127 -> 15), then drop 13 mantissa bits rounding to nearest even; a carry out of the
    // mantissa correctly bumps the exponent.
    const uint32_t r = a - 0x38000000u;
    return uint16_t(sign | ((r + 0x0FFFu + ((r >> 13) & 1u)) >> 13));
  }
  if (a <= 0x33000000u) return sign;  // <= 2^-25: half of the smallest subnormal or less rounds (to even) to 0
  // Subnormal result m·2^-24 (m in 1..1024; 1024 is the smallest normal, whose bits are exactly 0x0400):
  // m = round(mant·2^(e-150) / 2^-24) = round(mant >> (126 - e)) with e the float's biased exponent (102..112).
  const uint32_t e = a >> 23;
  const uint32_t mant = (a & 0x007FFFFFu) | 0x00800000u;
  const uint32_t shift = 126u - e;  // 14..24
  uint32_t q = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
  if (rem > halfway || (rem == halfway && (q & 1u) != 0u)) ++q;
  return uint16_t(sign | q);
}

// f16 bits -> float (exact).
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x03FFu;
  if (e == 0x1Fu) return bits_to_float(sign | 0x7F800000u | (m << 13));  // inf (m == 0) or NaN
  if (e != 0u) return bits_to_float(sign | ((e + 112u) << 23) | (m << 13));
  // Zero or subnormal m·2^-24: m < 2^10, so the product is exact (and a normal float, never flushed).
  const float mag = float(m) * 5.9604644775390625e-8f;  // 2^-24
  return bits_to_float(sign | float_to_bits(mag));
}

}  // namespace arclight::kernels
