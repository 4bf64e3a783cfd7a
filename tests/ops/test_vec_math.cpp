// The vectorisable float math of kernels/cpu/vec_math.hpp against libm in double: exp_fast over its whole
// normal range (≤ 2 ulp, sampled uniformly in bit patterns), its edges (flush to 0 below the normal range, +inf above log(FLT_MAX), NaN through),
// and the activation helpers built on it (sigmoid, SiLU and their derivatives) against the double formulas,
// including far tails where a naive 1/(1+e^-x) would overflow.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/vec_math.hpp"

namespace kc = arclight::kernels::cpu;

namespace {
double ulp_error(float got, double want) {
  const float w = static_cast<float>(want);
  const double ulp = std::nextafter(w, std::numeric_limits<float>::infinity()) - w;
  return std::fabs(double(got) - want) / ulp;
}
}  // namespace

TEST(VecMath, ExpFastWithinTwoUlpOverTheNormalRange) {
  double worst = 0.0;
  float worst_x = 0.0f;
  std::int64_t checked = 0;
  // Every 1021st bit pattern of the positive floats, used with both signs: uniform in ulps, so tiny magnitudes
  // (where exp ≈ 1 + x) and the range ends are covered alike. Kept to exp's normal range [-87, 88.7].
  for (std::uint32_t bits = 0; bits < 0x7F800000u; bits += 1021u) {
    const float a = std::bit_cast<float>(bits);
    for (const float x : {a, -a}) {
      if (x < -87.0f || x > 88.7f) continue;
      const double e = ulp_error(kc::exp_fast(x), std::exp(double(x)));
      ++checked;
      if (e > worst) worst = e, worst_x = x;
    }
  }
  EXPECT_GT(checked, 2000000);  // 2 191 600 samples
  EXPECT_LE(worst, 2.0) << "worst error " << worst << " ulp at x = " << worst_x;
}

TEST(VecMath, ExpFastEdges) {
  EXPECT_EQ(kc::exp_fast(0.0f), 1.0f);
  EXPECT_EQ(kc::exp_fast(-100.0f), 0.0f);
  EXPECT_EQ(kc::exp_fast(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isinf(kc::exp_fast(89.0f)));
  EXPECT_TRUE(std::isinf(kc::exp_fast(std::numeric_limits<float>::infinity())));
  EXPECT_TRUE(std::isnan(kc::exp_fast(std::numeric_limits<float>::quiet_NaN())));
  // The top of the range needs 2^128 split in two halves: still finite and accurate.
  EXPECT_LE(ulp_error(kc::exp_fast(88.72f), std::exp(double(88.72f))), 2.0);
  EXPECT_TRUE(std::isfinite(kc::exp_fast(88.72f)));
  // The bottom of the normal range.
  EXPECT_LE(ulp_error(kc::exp_fast(-87.3f), std::exp(double(-87.3f))), 2.0);
}

TEST(VecMath, SigmoidAndSiluMatchTheDoubleFormulas) {
  double worst_s = 0, worst_sg = 0, worst_silu = 0, worst_silug = 0;
  for (int i = -4000; i <= 4000; ++i) {
    const float x = 0.01f * static_cast<float>(i) + 0.003f;  // [-40, 40], never exactly 0
    const double xd = x, s = 1.0 / (1.0 + std::exp(-xd));
    worst_s = std::max(worst_s, std::fabs(kc::act_sigmoid(x) - s) / s);
    worst_sg = std::max(worst_sg, std::fabs(kc::act_sigmoid_grad(x) - s * (1 - s)) / std::max(s * (1 - s), 1e-3));
    worst_silu = std::max(worst_silu, std::fabs(kc::act_silu(x) - xd * s) / std::max(std::fabs(xd * s), 1e-30));
    const double silu_g = s * (1 + xd * (1 - s));
    worst_silug = std::max(worst_silug, std::fabs(kc::act_silu_grad(x) - silu_g) / std::max(std::fabs(silu_g), 1e-3));
  }
  EXPECT_LT(worst_s, 2e-6);
  // s(1 − s) loses relative precision where s → 1 (1 − s cancels in float), so the tail is checked absolutely.
  EXPECT_LT(worst_sg, 1e-4);
  EXPECT_LT(worst_silu, 2e-6);
  EXPECT_LT(worst_silug, 1e-5);
  // Far tails: no overflow, exact limits.
  EXPECT_EQ(kc::act_sigmoid(200.0f), 1.0f);
  EXPECT_EQ(kc::act_sigmoid(-200.0f), 0.0f);
  EXPECT_EQ(kc::act_silu(-200.0f), -0.0f);
  EXPECT_EQ(kc::act_silu(200.0f), 200.0f);
  // The double overloads are libm's formulas.
  EXPECT_DOUBLE_EQ(kc::act_sigmoid(0.5), 1.0 / (1.0 + std::exp(-0.5)));
}
