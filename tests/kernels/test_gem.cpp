// Unit tests of the GeM CPU kernels (kernels/cpu/gem.hpp): forward against an obvious reference, float32
// against float64, the clamp, and bad input. Gradients are checked in test_head_gradcheck.cpp.
#include <gtest/gtest.h>

#include <cmath>

#include "head_test_util.hpp"
#include "kernels/cpu/gem.hpp"

namespace {

using namespace arclight;
using namespace arclight::test;
using kernels::GemShape;

// Obvious reference: loops, std::pow, double.
std::vector<double> gem_reference(const GemShape& s, const std::vector<double>& x, double p, double eps) {
  std::vector<double> y(size_t(s.n * s.c));
  for (int64_t i = 0; i < s.n * s.c; ++i) {
    double acc = 0.0;
    for (int64_t h = 0; h < s.hw; ++h) acc += std::pow(std::max(x[size_t(i * s.hw + h)], eps), p);
    y[size_t(i)] = std::pow(acc / double(s.hw), 1.0 / p);
  }
  return y;
}

TEST(GemForward, HandValues) {
  // One plane {1, 2, 3, 4}: p = 2 gives sqrt(30/4); p = 1 the mean; a negative entry counts as eps.
  const GemShape s{1, 1, 4};
  std::vector<double> x{1.0, 2.0, 3.0, 4.0};
  std::vector<double> y = garbage<double>(1);
  kernels::cpu::gem_forward(s, x.data(), 2.0, 1e-6, y.data());
  EXPECT_NEAR(y[0], std::sqrt(7.5), 1e-14);
  kernels::cpu::gem_forward(s, x.data(), 1.0, 1e-6, y.data());
  EXPECT_NEAR(y[0], 2.5, 1e-14);
  x = {-5.0, 2.0, 2.0, 2.0};
  kernels::cpu::gem_forward(s, x.data(), 1.0, 1e-6, y.data());
  EXPECT_NEAR(y[0], (6.0 + 1e-6) / 4.0, 1e-14);
}

TEST(GemForward, LargePApproachesMax) {
  const GemShape s{1, 1, 3};
  std::vector<double> x{0.5, 1.5, 3.0};
  double y = NAN;
  kernels::cpu::gem_forward(s, x.data(), 200.0, 1e-6, &y);
  // (mean x^p)^(1/p) -> max as p grows: 3·(1/3)^(1/200).
  EXPECT_NEAR(y, 3.0 * std::pow(1.0 / 3.0, 1.0 / 200.0), 1e-9);
  EXPECT_LT(y, 3.0);
}

TEST(GemForward, MatchesReferenceFloatAndDouble) {
  const GemShape s{3, 5, 49};
  auto x = random_vector(size_t(s.n * s.c * s.hw), -0.5, 4.0, 11);
  for (double p : {1.0, 2.2, 3.0, 6.5}) {
    const auto ref = gem_reference(s, x, p, 1e-6);
    auto yd = garbage<double>(ref.size());
    kernels::cpu::gem_forward(s, x.data(), p, 1e-6, yd.data());
    expect_all_close(yd, ref, 1e-13, 0.0, "gem f64 p=" + std::to_string(p));
    auto xf = cast_vector<float>(x);
    auto yf = garbage<float>(ref.size());
    kernels::cpu::gem_forward(s, xf.data(), float(p), 1e-6f, yf.data());
    expect_all_close(yf, ref, 2e-6, 1e-7, "gem f32 p=" + std::to_string(p));
  }
}

TEST(GemBackward, FloatMatchesDouble) {
  const GemShape s{2, 7, 64};
  auto x = random_vector(size_t(s.n * s.c * s.hw), 0.01, 3.0, 12);
  auto gy = random_vector(size_t(s.n * s.c), -1.0, 1.0, 13);
  auto gxd = garbage<double>(x.size());
  double gpd = NAN;
  kernels::cpu::gem_backward(s, x.data(), gy.data(), 3.0, 1e-6, gxd.data(), &gpd);
  auto xf = cast_vector<float>(x), gyf = cast_vector<float>(gy);
  auto gxf = garbage<float>(x.size());
  float gpf = NAN;
  kernels::cpu::gem_backward(s, xf.data(), gyf.data(), 3.0f, 1e-6f, gxf.data(), &gpf);
  expect_all_close(gxf, gxd, 1e-5, 1e-7, "gem grad x f32 vs f64");
  EXPECT_NEAR(gpf, gpd, 1e-5 * std::abs(gpd) + 1e-6);
  // Either output may be skipped without changing the other.
  auto gx2 = garbage<double>(x.size());
  kernels::cpu::gem_backward<double>(s, x.data(), gy.data(), 3.0, 1e-6, gx2.data(), nullptr);
  expect_all_close(gx2, gxd, 0.0, 0.0, "gem grad x without gp");
  double gp2 = NAN;
  kernels::cpu::gem_backward<double>(s, x.data(), gy.data(), 3.0, 1e-6, nullptr, &gp2);
  EXPECT_EQ(gp2, gpd);
}

TEST(GemBackward, ClampedEntriesGetNoGradient) {
  const GemShape s{1, 1, 4};
  std::vector<double> x{-1.0, 0.0, 0.5, 2.0};
  std::vector<double> gy{1.0};
  auto gx = garbage<double>(4);
  double gp = NAN;
  kernels::cpu::gem_backward(s, x.data(), gy.data(), 3.0, 1e-6, gx.data(), &gp);
  EXPECT_EQ(gx[0], 0.0);
  EXPECT_EQ(gx[1], 0.0);
  EXPECT_GT(gx[2], 0.0);
  EXPECT_GT(gx[3], gx[2]);
  EXPECT_TRUE(std::isfinite(gp));
}

TEST(GemBackward, AllZeroPlaneIsFinite) {
  // A dead (all-zero, e.g. after ReLU) channel: y = eps, dy/dx = 0, dy/dp = 0, in float and double, even
  // for a large p where eps^p underflows in float.
  const GemShape s{1, 2, 9};
  for (double p : {3.0, 9.0}) {
    std::vector<double> x(18, 0.0), gy{1.0, -2.0};
    auto y = garbage<double>(2), gx = garbage<double>(18);
    double gp = NAN;
    kernels::cpu::gem_forward(s, x.data(), p, 1e-6, y.data());
    kernels::cpu::gem_backward(s, x.data(), gy.data(), p, 1e-6, gx.data(), &gp);
    EXPECT_NEAR(y[0], 1e-6, 1e-18);
    for (double v : gx) EXPECT_EQ(v, 0.0);
    EXPECT_NEAR(gp, 0.0, 1e-12);
    std::vector<float> xf(18, 0.0f), gyf{1.0f, -2.0f}, yf = garbage<float>(2), gxf = garbage<float>(18);
    float gpf = NAN;
    kernels::cpu::gem_forward(s, xf.data(), float(p), 1e-6f, yf.data());
    kernels::cpu::gem_backward(s, xf.data(), gyf.data(), float(p), 1e-6f, gxf.data(), &gpf);
    for (float v : yf) EXPECT_TRUE(std::isfinite(v));
    for (float v : gxf) EXPECT_EQ(v, 0.0f);
    EXPECT_TRUE(std::isfinite(gpf));
    EXPECT_NEAR(gpf, 0.0f, 1e-6f);
  }
}

TEST(GemErrors, BadArguments) {
  const GemShape s{1, 2, 4};
  std::vector<double> x(8, 1.0), y(2);
  expect_error([&] { kernels::cpu::gem_forward(s, x.data(), 0.0, 1e-6, y.data()); }, {"gem_forward", "p > 0", "p=0"});
  expect_error([&] { kernels::cpu::gem_forward(s, x.data(), -2.0, 1e-6, y.data()); }, {"gem_forward", "p=-2"});
  expect_error([&] { kernels::cpu::gem_forward(s, x.data(), std::nan(""), 1e-6, y.data()); },
               {"gem_forward", "finite"});
  expect_error([&] { kernels::cpu::gem_forward(s, x.data(), 3.0, 0.0, y.data()); }, {"gem_forward", "eps > 0"});
  expect_error(
      [&] {
        kernels::cpu::gem_forward(GemShape{1, 2, 0}, x.data(), 3.0, 1e-6, y.data());
      },
      {"gem_forward", "hw > 0", "hw=0"});
  expect_error(
      [&] {
        kernels::cpu::gem_forward(GemShape{-1, 2, 4}, x.data(), 3.0, 1e-6, y.data());
      },
      {"gem_forward", "n=-1"});
  expect_error([&] { kernels::cpu::gem_backward<double>(s, x.data(), y.data(), -1.0, 1e-6, x.data(), nullptr); },
               {"gem_backward", "p > 0"});
}

}  // namespace
