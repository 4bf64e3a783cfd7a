// Unit tests of the ArcMargin CPU kernels (kernels/cpu/arc_margin.hpp): the target logit against the
// angle formula cos(acos(c) + m), the θ + m > π fallback, easy_margin, CosFace, combined, per-class
// margins and ramp-up, sub-centres, |cos| → 1, float32 vs float64, L2 normalisation, the cosine GEMM and
// bad input. Gradients are checked in test_head_gradcheck.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "head_test_util.hpp"
#include "kernels/cpu/arc_margin.hpp"

namespace {

using namespace arclight;
using namespace arclight::test;
using kernels::ArcMarginConfig;
using kernels::ArcMarginShape;
using kernels::MarginKind;

ArcMarginConfig arcface(double s, double m, bool easy = false) {
  ArcMarginConfig c;
  c.kind = MarginKind::kArcFace;
  c.scale = s;
  c.margin = m;
  c.easy_margin = easy;
  return c;
}

// Runs the forward on one row [c_0 .. c_{k-1}] with label y and returns the logits.
std::vector<double> forward_row(const ArcMarginConfig& cfg, const std::vector<double>& row, int64_t y,
                                const double* class_margins = nullptr) {
  const ArcMarginShape s{1, int64_t(row.size()), 1};
  auto out = garbage<double>(row.size());
  kernels::cpu::arc_margin_forward(s, cfg, row.data(), &y, class_margins, out.data());
  return out;
}

TEST(ArcMarginForward, ArcFaceMatchesAngleFormulaAboveThreshold) {
  const double m = 0.5, s = 30.0, th = std::cos(std::numbers::pi - m);
  for (double c : {0.99, 0.7, 0.2, -0.3, -0.8, th + 1e-3}) {
    const auto out = forward_row(arcface(s, m), {c, 0.1, -0.2}, 0);
    EXPECT_NEAR(out[0], s * std::cos(std::acos(c) + m), 1e-11) << "c=" << c;
    EXPECT_DOUBLE_EQ(out[1], s * 0.1);
    EXPECT_DOUBLE_EQ(out[2], s * -0.2);
  }
}

TEST(ArcMarginForward, FallbackBelowThreshold) {
  const double m = 0.5, s = 10.0, th = std::cos(std::numbers::pi - m);
  const double mm = std::sin(std::numbers::pi - m) * m;
  for (double c : {th - 1e-3, -0.95, -1.0}) {
    const auto out = forward_row(arcface(s, m), {0.0, c}, 1);
    EXPECT_NEAR(out[1], s * (c - mm), 1e-12) << "c=" << c;
  }
  // Fallback is monotone where cos(θ + m) would turn back up past π.
  const auto a = forward_row(arcface(s, m), {0.0, -0.99}, 1);
  const auto b = forward_row(arcface(s, m), {0.0, -0.95}, 1);
  EXPECT_LT(a[1], b[1]);
}

TEST(ArcMarginForward, EasyMarginOnlyForPositiveCosine) {
  const double m = 0.4, s = 45.0;
  auto out = forward_row(arcface(s, m, true), {0.6, 0.0}, 0);
  EXPECT_NEAR(out[0], s * std::cos(std::acos(0.6) + m), 1e-11);
  out = forward_row(arcface(s, m, true), {-0.95, 0.0}, 0);  // below th too: easy keeps c unchanged
  EXPECT_DOUBLE_EQ(out[0], s * -0.95);
  out = forward_row(arcface(s, m, true), {-0.3, 0.0}, 0);
  EXPECT_DOUBLE_EQ(out[0], s * -0.3);
}

TEST(ArcMarginForward, CosFaceAndCombined) {
  ArcMarginConfig cos_face;
  cos_face.kind = MarginKind::kCosFace;
  cos_face.scale = 64.0;
  cos_face.margin = 0.35;
  for (double c : {0.9, -0.2, -1.0}) {
    const auto out = forward_row(cos_face, {c, 0.5}, 0);
    EXPECT_NEAR(out[0], 64.0 * (c - 0.35), 1e-12) << "c=" << c;
    EXPECT_DOUBLE_EQ(out[1], 32.0);
  }
  ArcMarginConfig comb = arcface(30.0, 0.3);
  comb.kind = MarginKind::kCombined;
  comb.additive_margin = 0.2;
  const auto out = forward_row(comb, {0.1, 0.8}, 1);
  EXPECT_NEAR(out[1], 30.0 * (std::cos(std::acos(0.8) + 0.3) - 0.2), 1e-11);
  EXPECT_DOUBLE_EQ(out[0], 3.0);
}

TEST(ArcMarginForward, PerClassMarginsAndRampUp) {
  const std::vector<double> margins{0.1, 0.5, 0.3};
  const std::vector<double> row{0.4, 0.6, 0.2};
  ArcMarginConfig cfg = arcface(20.0, 99.0);  // cfg.margin is replaced by the per-class array
  for (int64_t y = 0; y < 3; ++y) {
    const auto out = forward_row(cfg, row, y, margins.data());
    EXPECT_NEAR(out[size_t(y)], 20.0 * std::cos(std::acos(row[size_t(y)]) + margins[size_t(y)]), 1e-11) << "y=" << y;
  }
  cfg = arcface(20.0, 0.5);
  cfg.margin_scale = 0.0;  // ramp start: plain scaled cosine
  auto out = forward_row(cfg, row, 1);
  EXPECT_NEAR(out[1], 20.0 * 0.6, 1e-12);
  cfg.margin_scale = 0.5;  // halfway: margin 0.25
  out = forward_row(cfg, row, 1);
  EXPECT_NEAR(out[1], 20.0 * std::cos(std::acos(0.6) + 0.25), 1e-11);
}

TEST(ArcMarginForward, CosineOfOneIsFinite) {
  for (double c : {1.0, -1.0, 1.0 + 1e-7}) {
    const auto out = forward_row(arcface(30.0, 0.5), {c, 0.0}, 0);
    EXPECT_TRUE(std::isfinite(out[0])) << c;
  }
  EXPECT_NEAR(forward_row(arcface(30.0, 0.5), {1.0, 0.0}, 0)[0], 30.0 * std::cos(0.5), 1e-12);
  // Backward at exactly ±1 and at the float neighbour of 1: finite.
  const ArcMarginShape s{1, 2, 1};
  const ArcMarginConfig cfg = arcface(30.0, 0.5);
  for (double c : {1.0, -1.0}) {
    std::vector<double> row{c, 0.0}, g{1.0, 1.0}, gc = garbage<double>(2);
    int64_t y = 0;
    kernels::cpu::arc_margin_backward(s, cfg, row.data(), &y, static_cast<const double*>(nullptr), g.data(), gc.data());
    EXPECT_TRUE(std::isfinite(gc[0]) && std::isfinite(gc[1])) << c;
  }
  std::vector<float> rowf{std::nextafter(1.0f, 0.0f), 0.0f}, gf{1.0f, 1.0f}, gcf = garbage<float>(2);
  int64_t y = 0;
  kernels::cpu::arc_margin_backward(s, cfg, rowf.data(), &y, static_cast<const float*>(nullptr), gf.data(), gcf.data());
  EXPECT_TRUE(std::isfinite(gcf[0]));
  // Just below 1 the derivative is the true one, cos m + sin m·c/sinθ (large but exact).
  const double c = std::nextafter(1.0f, 0.0f);
  EXPECT_NEAR(gcf[0], 30.0 * (std::cos(0.5) + std::sin(0.5) * c / std::sqrt(1 - c * c)), 1e-3 * std::abs(gcf[0]));
}

TEST(ArcMarginForward, SubCentersTakeTheMaximum) {
  // 2 rows, 3 classes, K = 2: class cosine = max of its two centres.
  const ArcMarginShape s{2, 3, 2};
  const std::vector<double> cos{0.1, 0.3,  -0.2, -0.5, 0.7,  0.6,  //
                                0.2, 0.25, 0.9,  0.4,  -0.1, -0.3};
  const std::vector<int64_t> labels{2, 0};
  const ArcMarginConfig cfg = arcface(10.0, 0.5);
  auto out = garbage<double>(6);
  kernels::cpu::arc_margin_forward(s, cfg, cos.data(), labels.data(), static_cast<const double*>(nullptr), out.data());
  EXPECT_DOUBLE_EQ(out[0], 3.0);
  EXPECT_DOUBLE_EQ(out[1], -2.0);
  EXPECT_NEAR(out[2], 10.0 * std::cos(std::acos(0.7) + 0.5), 1e-11);
  EXPECT_NEAR(out[3], 10.0 * std::cos(std::acos(0.25) + 0.5), 1e-11);
  EXPECT_DOUBLE_EQ(out[4], 9.0);
  EXPECT_DOUBLE_EQ(out[5], -1.0);
  // Backward routes each class gradient to its winning centre only.
  const std::vector<double> g{1, 2, 3, 4, 5, 6};
  auto gc = garbage<double>(12);
  kernels::cpu::arc_margin_backward(s, cfg, cos.data(), labels.data(), static_cast<const double*>(nullptr), g.data(),
                                    gc.data());
  const std::vector<int> winner{0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0};
  for (size_t i = 0; i < 12; ++i) {
    if (winner[i] == 0) {
      EXPECT_EQ(gc[i], 0.0) << i;
    } else {
      EXPECT_NE(gc[i], 0.0) << i;
    }
  }
  EXPECT_DOUBLE_EQ(gc[2], 10.0 * 2.0);  // row 0, class 1 (not the target): its centre 0 gets s·g
  const double c = 0.7;                 // row 0's target (class 2, centre 0): s·g·phi'(c)
  EXPECT_NEAR(gc[4], 10.0 * 3.0 * (std::cos(0.5) + std::sin(0.5) * c / std::sqrt(1 - c * c)), 1e-12);
}

TEST(ArcMarginForward, FloatMatchesDouble) {
  const ArcMarginShape s{16, 40, 2};
  const auto cos = random_vector(size_t(s.n * s.classes * s.sub_centers), -1.0, 1.0, 21);
  const auto labels = random_labels(size_t(s.n), s.classes, 22);
  const auto g = random_vector(size_t(s.n * s.classes), -1.0, 1.0, 23);
  ArcMarginConfig cfg = arcface(30.0, 0.5);
  for (auto kind : {MarginKind::kArcFace, MarginKind::kCosFace, MarginKind::kCombined}) {
    cfg.kind = kind;
    cfg.additive_margin = 0.1;
    auto od = garbage<double>(g.size());
    kernels::cpu::arc_margin_forward(s, cfg, cos.data(), labels.data(), static_cast<const double*>(nullptr), od.data());
    auto cf = cast_vector<float>(cos);
    auto of = garbage<float>(g.size());
    kernels::cpu::arc_margin_forward(s, cfg, cf.data(), labels.data(), static_cast<const float*>(nullptr), of.data());
    expect_all_close(of, od, 1e-6, 1e-5, "arc forward f32");
    auto gd = garbage<double>(cos.size());
    kernels::cpu::arc_margin_backward(s, cfg, cos.data(), labels.data(), static_cast<const double*>(nullptr), g.data(),
                                      gd.data());
    auto gfl = cast_vector<float>(g);
    auto gf = garbage<float>(cos.size());
    kernels::cpu::arc_margin_backward(s, cfg, cf.data(), labels.data(), static_cast<const float*>(nullptr), gfl.data(),
                                      gf.data());
    expect_all_close(gf, gd, 1e-4, 1e-5, "arc backward f32");
  }
}

TEST(ArcMarginErrors, BadArguments) {
  const ArcMarginShape s{2, 3, 1};
  std::vector<double> cos(6, 0.1), out(6);
  std::vector<int64_t> labels{0, 2};
  const double* none = nullptr;
  auto run = [&](const ArcMarginConfig& c, const ArcMarginShape& sh, const double* cm = nullptr) {
    kernels::cpu::arc_margin_forward(sh, c, cos.data(), labels.data(), cm, out.data());
  };
  expect_error([&] { run(arcface(30, -0.1), s, none); }, {"arc_margin_forward", "margin m >= 0", "m=-0.1"});
  expect_error([&] { run(arcface(0, 0.5), s, none); }, {"arc_margin_forward", "scale s > 0"});
  expect_error([&] { run(arcface(30, 3.5), s, none); }, {"arc_margin_forward", "< pi"});
  ArcMarginConfig c = arcface(30, 0.5);
  c.margin_scale = -1;
  expect_error([&] { run(c, s, none); }, {"arc_margin_forward", "margin_scale >= 0"});
  c = arcface(30, 0.5);
  c.kind = MarginKind::kCombined;
  c.additive_margin = -0.2;
  expect_error([&] { run(c, s, none); }, {"arc_margin_forward", "additive_margin >= 0"});
  const std::vector<double> margins{0.2, -0.3, 0.1};
  expect_error([&] { run(arcface(30, 0.5), s, margins.data()); }, {"arc_margin_forward", "m=-0.3", "for class 1"});
  labels = {0, 3};
  expect_error([&] { run(arcface(30, 0.5), s, none); }, {"arc_margin_forward", "label 3 at row 1", "< 3"});
  labels = {-1, 0};
  expect_error([&] { run(arcface(30, 0.5), s, none); }, {"label -1 at row 0"});
  labels = {0, 0};
  expect_error([&] { run(arcface(30, 0.5), ArcMarginShape{2, 0, 1}, none); }, {"classes > 0"});
  expect_error([&] { run(arcface(30, 0.5), ArcMarginShape{2, 3, 0}, none); }, {"sub_centers >= 1"});
  std::vector<double> g(6, 1.0);
  expect_error(
      [&] {
        kernels::cpu::arc_margin_backward(s, arcface(-1, 0.5), cos.data(), labels.data(), none, g.data(), out.data());
      },
      {"arc_margin_backward", "scale"});
}

// ---- L2 normalisation and the cosine GEMM ------------------------------------------------------------

TEST(L2Normalize, UnitRowsAndZeroRow) {
  const int64_t rows = 4, dim = 5;
  auto x = random_vector(size_t(rows * dim), -2.0, 2.0, 31);
  for (int64_t d = 0; d < dim; ++d) x[size_t(2 * dim + d)] = 0.0;  // a zero row stays zero (divided by eps)
  auto y = garbage<double>(x.size());
  kernels::cpu::l2_normalize_forward(rows, dim, x.data(), 1e-12, y.data());
  for (int64_t i = 0; i < rows; ++i) {
    double ss = 0.0, xs = 0.0;
    for (int64_t d = 0; d < dim; ++d) {
      ss += y[size_t(i * dim + d)] * y[size_t(i * dim + d)];
      xs += x[size_t(i * dim + d)] * x[size_t(i * dim + d)];
    }
    if (i == 2) {
      EXPECT_EQ(ss, 0.0);
    } else {
      EXPECT_NEAR(ss, 1.0, 1e-14);
      for (int64_t d = 0; d < dim; ++d)
        EXPECT_NEAR(y[size_t(i * dim + d)], x[size_t(i * dim + d)] / std::sqrt(xs), 1e-15);
    }
  }
  auto gy = random_vector(x.size(), -1.0, 1.0, 32);
  auto gx = garbage<double>(x.size());
  kernels::cpu::l2_normalize_backward(rows, dim, x.data(), gy.data(), 1e-12, gx.data());
  for (int64_t d = 0; d < dim; ++d) EXPECT_NEAR(gx[size_t(2 * dim + d)], gy[size_t(2 * dim + d)] / 1e-12, 1e-3);
  // The gradient is orthogonal to the row (the norm is scale invariant).
  for (int64_t i : {0, 1, 3}) {
    double d0 = 0.0;
    for (int64_t d = 0; d < dim; ++d) d0 += gx[size_t(i * dim + d)] * x[size_t(i * dim + d)];
    EXPECT_NEAR(d0, 0.0, 1e-13);
  }
  expect_error([&] { kernels::cpu::l2_normalize_forward(rows, int64_t(0), x.data(), 1e-12, y.data()); },
               {"l2_normalize_forward", "dim > 0"});
  expect_error([&] { kernels::cpu::l2_normalize_forward(rows, dim, x.data(), 0.0, y.data()); }, {"eps > 0"});
}

TEST(CosineMatmul, MatchesLoopsFloatAndDouble) {
  const kernels::cpu::CosineMatmulShape s{6, 9, 13};
  const auto x = random_vector(size_t(s.n * s.d), -1.0, 1.0, 41);
  const auto w = random_vector(size_t(s.k * s.d), -1.0, 1.0, 42);
  const auto g = random_vector(size_t(s.n * s.k), -1.0, 1.0, 43);
  std::vector<double> ref(size_t(s.n * s.k), 0.0), ref_gx(size_t(s.n * s.d), 0.0), ref_gw(size_t(s.k * s.d), 0.0);
  for (int64_t i = 0; i < s.n; ++i)
    for (int64_t j = 0; j < s.k; ++j)
      for (int64_t d = 0; d < s.d; ++d) {
        ref[size_t(i * s.k + j)] += x[size_t(i * s.d + d)] * w[size_t(j * s.d + d)];
        ref_gx[size_t(i * s.d + d)] += g[size_t(i * s.k + j)] * w[size_t(j * s.d + d)];
        ref_gw[size_t(j * s.d + d)] += g[size_t(i * s.k + j)] * x[size_t(i * s.d + d)];
      }
  auto cd = garbage<double>(ref.size()), gxd = garbage<double>(ref_gx.size()), gwd = garbage<double>(ref_gw.size());
  kernels::cpu::cosine_matmul_forward(s, x.data(), w.data(), cd.data());
  kernels::cpu::cosine_matmul_backward(s, x.data(), w.data(), g.data(), gxd.data(), gwd.data());
  expect_all_close(cd, ref, 1e-13, 1e-14, "cos f64");
  expect_all_close(gxd, ref_gx, 1e-13, 1e-14, "g_x f64");
  expect_all_close(gwd, ref_gw, 1e-13, 1e-14, "g_w f64");
  auto xf = cast_vector<float>(x), wf = cast_vector<float>(w), gf = cast_vector<float>(g);
  auto cf = garbage<float>(ref.size()), gxf = garbage<float>(ref_gx.size()), gwf = garbage<float>(ref_gw.size());
  kernels::cpu::cosine_matmul_forward(s, xf.data(), wf.data(), cf.data());
  kernels::cpu::cosine_matmul_backward(s, xf.data(), wf.data(), gf.data(), gxf.data(), gwf.data());
  expect_all_close(cf, ref, 1e-5, 1e-6, "cos f32");
  expect_all_close(gxf, ref_gx, 1e-5, 1e-6, "g_x f32");
  expect_all_close(gwf, ref_gw, 1e-5, 1e-6, "g_w f32");
  expect_error(
      [&] {
        kernels::cpu::cosine_matmul_forward({6, 0, 13}, x.data(), w.data(), cd.data());
      },
      {"cosine_matmul_forward", "k > 0"});
}

}  // namespace
