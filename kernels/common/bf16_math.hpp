// bfloat16 <-> float32 conversion on the bit level, written once for the host compiler and nvcc
// (ARCLIGHT_HOST_DEVICE) so the CUDA conversion kernel (kernels/cuda/elementwise.cuh, ew_convert) and the host-side
// references of its tests produce identical bits. bf16 is the upper half of a float32: 1 sign bit, 8 exponent bits,
// 7 mantissa bits. float -> bf16 rounds to nearest, ties to even (so it can round up into infinity, as
// torch.Tensor.to(torch.bfloat16) does); any NaN becomes a quiet NaN with the same sign. bf16 -> float is exact.
// The bit casts use no memcpy: __float_as_uint / __uint_as_float in device code, __builtin_bit_cast (GCC >= 11,
// Clang >= 9, and nvcc's host pass) elsewhere.
#pragma once

#include <stdint.h>

#include "kernels/common/macros.hpp"

namespace arclight::kernels {

// The IEEE-754 bits of f.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(uint32_t, f);
#endif
}

// The float whose IEEE-754 bits are u.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

// float -> bf16 bits, round to nearest even. ensures: NaN -> quiet NaN (sign kept, mantissa MSB set);
// ±inf -> ±inf; finite values above the largest bf16 (plus half an ulp) -> ±inf; -0 -> -0.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE uint16_t float_to_bf16_bits(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x0040u);  // NaN: keep sign, force quiet
  // Adding 0x7FFF plus the lowest kept bit rounds the discarded half to nearest, ties to the even kept value.
  // No wrap-around: the largest non-NaN pattern 0xFF800000 plus 0x8000 stays below 2^32.
  const uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(rounded >> 16);
}

// bf16 bits -> float (exact: the bits become the float's upper half).
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE float bf16_bits_to_float(uint16_t b) { return bits_to_float(uint32_t(b) << 16); }

}  // namespace arclight::kernels
