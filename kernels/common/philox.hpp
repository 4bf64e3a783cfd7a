// Philox4x32-10 counter-based random numbers (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC'11). A (key, counter) pair maps to four independent 32-bit words, so element i of any random
// tensor is a pure function of (seed, offset, i): the numbers do not depend on thread count or device.
#pragma once

#include <cstdint>

#include "kernels/common/macros.hpp"

namespace arclight::kernels {

struct Philox4 {
  std::uint32_t v[4];
};

ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE void philox_mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi,
                                                         std::uint32_t& lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b);
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}

// Ten rounds of Philox4x32 on `counter` under the 64-bit key `seed`.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE Philox4 philox4x32_10(Philox4 counter, std::uint64_t seed) {
  std::uint32_t k0 = static_cast<std::uint32_t>(seed);
  std::uint32_t k1 = static_cast<std::uint32_t>(seed >> 32);
  Philox4 c = counter;
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c.v[0], hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c.v[2], hi1, lo1);
    c = Philox4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// The four words for 128-bit block `block` of stream `stream` (the stream separates independent uses of
// one seed, e.g. the sample index of an augmentation).
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE Philox4 philox_block(std::uint64_t seed, std::uint64_t stream,
                                                          std::uint64_t block) {
  Philox4 ctr{{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
               static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)}};
  return philox4x32_10(ctr, seed);
}

// Uniform float in [0, 1) from 24 random bits; uniform double in [0, 1) from 53 bits.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE float philox_uniform_f32(std::uint32_t x) {
  return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
}
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE double philox_uniform_f64(std::uint32_t hi, std::uint32_t lo) {
  const std::uint64_t bits = (static_cast<std::uint64_t>(hi) << 21) ^ (lo >> 11);
  return static_cast<double>(bits & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

}  // namespace arclight::kernels
