// Host tests of the IEEE half (fp16) <-> float32 bit conversions of kernels/common/f16_math.hpp (the functions the
// CUDA conversion kernel, the emulator's cuBLAS/cuDNN stand-ins and the mixed-precision tests share), against an
// independent reference: f16 patterns decoded with std::ldexp in double (sign · m · 2^(e−25) with the implicit bit,
// m · 2^-24 for subnormals), and "round to nearest, ties to even" checked as a property — the chosen f16 value is at
// least as close to the input as both neighbours, with an even mantissa on a tie — rather than by re-deriving the
// bits. Exhaustive over all 65536 f16 patterns (decode, round trip, every midpoint between neighbours and the
// floats right beside it), plus a few million float inputs (random bit patterns and values spread over the f16
// range), and the dtype-generic host helpers of arclight/cuda/dnn.hpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "arclight/cuda/dnn.hpp"
#include "harness.hpp"
#include "kernels/common/f16_math.hpp"

namespace {

using arclight::kernels::f16_bits_to_float;
using arclight::kernels::float_to_f16_bits;

bool is_nan_pattern(std::uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x03FFu) != 0u; }

// The value of an f16 pattern, decoded independently of f16_math.hpp (NaN for NaN patterns).
double ref_decode(std::uint16_t h) {
  const double sign = (h & 0x8000u) ? -1.0 : 1.0;
  const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
  if (e == 0x1F) return m == 0 ? sign * std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  if (e == 0) return sign * std::ldexp(double(m), -24);
  return sign * std::ldexp(double(1024 + m), e - 25);
}

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(HalfMath, KnownValues) {
  EXPECT_EQ(float_to_f16_bits(1.f), 0x3C00);
  EXPECT_EQ(float_to_f16_bits(-2.f), 0xC000);
  EXPECT_EQ(float_to_f16_bits(65504.f), 0x7BFF);
  EXPECT_EQ(float_to_f16_bits(0x1p-14f), 0x0400);  // smallest normal
  EXPECT_EQ(float_to_f16_bits(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_f16_bits(1.f / 3.f), 0x3555);
  EXPECT_EQ(float_to_f16_bits(0.1f), 0x2E66);
  EXPECT_EQ(float_to_f16_bits(-0.f), 0x8000);
  EXPECT_EQ(float_to_f16_bits(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(float_to_f16_bits(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(float_to_f16_bits(1e10f), 0x7C00);
  EXPECT_EQ(float_to_f16_bits(-70000.f), 0xFC00);
  EXPECT_EQ(float_to_f16_bits(std::numeric_limits<float>::max()), 0x7C00);
  EXPECT_EQ(float_to_f16_bits(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(f16_bits_to_float(0x3C00), 1.f);
  EXPECT_EQ(f16_bits_to_float(0x7BFF), 65504.f);
  EXPECT_EQ(f16_bits_to_float(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_bits_to_float(0x03FF), 1023 * 0x1p-24f);
}

// Every pattern decodes to the reference value (same sign of zero; NaN to a NaN with the same sign).
TEST(HalfMath, DecodeEveryPatternExactly) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto h = std::uint16_t(b);
    const float got = f16_bits_to_float(h);
    ASSERT_EQ(std::signbit(got), (h & 0x8000u) != 0) << "pattern 0x" << std::hex << b;
    if (is_nan_pattern(h)) {
      ASSERT_TRUE(std::isnan(got)) << "pattern 0x" << std::hex << b;
      continue;
    }
    ASSERT_EQ(double(got), ref_decode(h)) << "pattern 0x" << std::hex << b;
  }
}

// Encoding the decoded value gives the pattern back (every value is representable, so no rounding happens); NaN
// patterns come back as quiet NaNs of the same sign.
TEST(HalfMath, RoundTripOfEveryPattern) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto h = std::uint16_t(b);
    const std::uint16_t back = float_to_f16_bits(f16_bits_to_float(h));
    if (is_nan_pattern(h)) {
      ASSERT_TRUE(is_nan_pattern(back)) << "pattern 0x" << std::hex << b << " -> 0x" << back;
      ASSERT_EQ(back & 0x8000u, h & 0x8000u) << "pattern 0x" << std::hex << b;
      ASSERT_NE(back & 0x0200u, 0u) << "quiet bit, pattern 0x" << std::hex << b;
    } else {
      ASSERT_EQ(back, h) << "pattern 0x" << std::hex << b;
    }
  }
  // A signalling float NaN (quiet bit clear, payload only in the low bits) stays a NaN.
  EXPECT_TRUE(is_nan_pattern(float_to_f16_bits(float_of(0x7F800001u))));
  EXPECT_TRUE(is_nan_pattern(float_to_f16_bits(float_of(0xFF800001u))));
  EXPECT_EQ(float_to_f16_bits(float_of(0xFF800001u)) & 0x8000u, 0x8000u);
}

// Between every pair of neighbouring finite f16 values (both signs, subnormals included, and from 65504 to the
// first value past it, which rounds to infinity): the midpoint goes to the even neighbour, the float just below it
// to the lower and the float just above it to the upper neighbour.
TEST(HalfMath, EveryMidpointTiesToEvenAndItsNeighboursRoundToNearest) {
  for (std::uint32_t lo = 0; lo <= 0x7BFF; ++lo) {
    const std::uint32_t hi = lo + 1;  // 0x7C00 (inf) after 65504: the overflow threshold
    const double a = ref_decode(std::uint16_t(lo)), b = hi == 0x7C00 ? 65536.0 : ref_decode(std::uint16_t(hi));
    const float mid = float((a + b) / 2);
    ASSERT_EQ(double(mid), (a + b) / 2) << "midpoints have 12 significant bits, exact in float";
    const std::uint16_t even = (lo & 1u) == 0 ? std::uint16_t(lo) : std::uint16_t(hi);
    const float below = std::nextafter(mid, 0.f), above = std::nextafter(mid, 1e30f);
    for (const std::uint16_t sign : {std::uint16_t(0), std::uint16_t(0x8000)}) {
      const float s = sign ? -1.f : 1.f;
      ASSERT_EQ(float_to_f16_bits(s * mid), sign | even) << "midpoint " << s * mid << " (lo 0x" << std::hex << lo << ")";
      ASSERT_EQ(float_to_f16_bits(s * below), sign | lo) << "below midpoint " << s * below;
      ASSERT_EQ(float_to_f16_bits(s * above), sign | hi) << "above midpoint " << s * above;
    }
  }
}

// The property "nearest, ties to even, overflow at 65520" on one input.
::testing::AssertionResult rounds_to_nearest(float x) {
  const std::uint16_t h = float_to_f16_bits(x);
  if (std::isnan(x)) {
    if (is_nan_pattern(h) && ((h & 0x8000u) != 0) == std::signbit(x)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "NaN input 0x" << std::hex << bits_of(x) << " gave 0x" << h;
  }
  if (((h & 0x8000u) != 0) != std::signbit(x))
    return ::testing::AssertionFailure() << "sign lost: " << x << " -> 0x" << std::hex << h;
  const double ax = std::abs(double(x));
  const std::uint16_t mag = h & 0x7FFFu;
  if (ax >= 65520.0) {
    if (mag == 0x7C00) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << x << " should overflow to inf, got 0x" << std::hex << h;
  }
  if (mag >= 0x7C00) return ::testing::AssertionFailure() << x << " overflowed to 0x" << std::hex << h;
  const double r = ref_decode(mag);
  const double d = std::abs(ax - r);
  const double d_lo = mag > 0 ? std::abs(ax - ref_decode(std::uint16_t(mag - 1))) : INFINITY;
  const double d_hi = std::abs(ax - (mag == 0x7BFF ? 65536.0 : ref_decode(std::uint16_t(mag + 1))));
  if (d > d_lo || d > d_hi)
    return ::testing::AssertionFailure() << x << " -> 0x" << std::hex << h << " (" << r << ") is not the nearest";
  if ((d == d_lo || d == d_hi) && (mag & 1u) != 0)
    return ::testing::AssertionFailure() << x << " is a tie and 0x" << std::hex << h << " is odd";
  return ::testing::AssertionSuccess();
}

TEST(HalfMath, ManyFloatsRoundToNearestEven) {
  std::mt19937_64 g(20240611);
  // Random bit patterns: every class of float (NaNs, infinities, huge and tiny values).
  for (int i = 0; i < 1000000; ++i) ASSERT_TRUE(rounds_to_nearest(float_of(std::uint32_t(g()))));
  // Values spread over the f16 range and just beyond it (binary exponents -27..16), random mantissas.
  std::uniform_int_distribution<int> ex(-27, 16);
  for (int i = 0; i < 2000000; ++i) {
    const std::uint32_t mant = std::uint32_t(g()) & 0x007FFFFFu, sign = std::uint32_t(g() & 1u) << 31;
    ASSERT_TRUE(rounds_to_nearest(float_of(sign | (std::uint32_t(ex(g) + 127) << 23) | mant)));
  }
  // Every float in [65504, 65536) (overflow boundary) and in the subnormal-to-normal boundary region.
  for (std::uint32_t u = bits_of(65504.f); u <= bits_of(65536.f); ++u) ASSERT_TRUE(rounds_to_nearest(float_of(u)));
  for (std::uint32_t u = bits_of(0x1p-15f); u <= bits_of(0x1p-14f) + 4096; u += 7) ASSERT_TRUE(rounds_to_nearest(float_of(u)));
}

TEST(HalfMath, DtypeGenericHostHelpers) {
  namespace ac = arclight::cuda;
  const std::vector<float> v = {1.f, 0.1f, -3.14159265f, 70000.f, 1e-6f, 0x1p-26f};
  const auto f16 = ac::round_to(v, arclight::DType::f16);
  const auto bf16 = ac::round_to(v, arclight::DType::bf16);
  EXPECT_EQ(ac::round_to(v, arclight::DType::f32), v);
  for (std::size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(f16[i], f16_bits_to_float(float_to_f16_bits(v[i]))) << i;
    EXPECT_EQ(bf16[i], ac::bf16_bits_to_float(ac::float_to_bf16_bits(v[i]))) << i;
  }
  EXPECT_TRUE(std::isinf(f16[3])) << "70000 overflows f16";
  EXPECT_EQ(bf16[3], 70144.f) << "but not bf16 (8 significant bits)";
  EXPECT_EQ(f16[5], 0.f) << "2^-26 is below half the smallest f16 subnormal";
  EXPECT_EQ(ac::to_f16_bits(v), ac::to_half_bits(v, arclight::DType::f16));
  EXPECT_EQ(ac::f16_bits_to_floats(ac::to_f16_bits(v)), f16);
  EXPECT_ERROR_WITH(ac::to_half_bits(v, arclight::DType::f32), "cuda::to_half_bits", "expected bf16 or f16, got f32");
  EXPECT_ERROR_WITH(ac::half_bits_to_floats({}, arclight::DType::f64), "cuda::half_bits_to_floats",
                    "expected bf16 or f16, got f64");
}

}  // namespace
