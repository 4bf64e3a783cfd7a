// Float64 central-difference gradient checks of every retrieval-head backward on the CPU: GeM (x and p),
// ArcMargin (both sides of the θ + m > π branch, easy_margin, CosFace, combined, per-class margins with
// ramp-up, sub-centres), L2 normalisation, the cosine GEMM, label-smoothing CE (weights × reductions),
// the fused ArcMargin → LS-CE, and the whole head from raw embeddings and class weights.
// Each check differentiates L = Σ g·output for a random cotangent g and compares with the kernel.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "head_test_util.hpp"
#include "kernels/cpu/arc_margin.hpp"
#include "kernels/cpu/arc_margin_cross_entropy.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/gem.hpp"

namespace {

using namespace arclight;
using namespace arclight::test;
using namespace arclight::kernels;
namespace cpu = arclight::kernels::cpu;

const double* kNoArray = nullptr;

// ---- GeM -------------------------------------------------------------------------------------------

TEST(GradCheck, GemInputAndExponent) {
  const GemShape s{2, 3, 6};
  auto x = random_vector(size_t(s.n * s.c * s.hw), 0.05, 2.0, 101);
  x[3] = -0.5;  // clamped entries (far below eps): zero gradient, smooth around them
  x[17] = -1.2;
  const auto gy = random_vector(size_t(s.n * s.c), -1.0, 1.0, 102);
  for (double p0 : {3.0, 1.7, 1.0}) {
    std::vector<double> p{p0};
    auto loss = [&] {
      std::vector<double> y(gy.size());
      cpu::gem_forward(s, x.data(), p[0], 1e-6, y.data());
      return dot(y, gy);
    };
    auto gx = garbage<double>(x.size());
    std::vector<double> gp{NAN};
    cpu::gem_backward(s, x.data(), gy.data(), p[0], 1e-6, gx.data(), gp.data());
    EXPECT_EQ(gx[3], 0.0);
    expect_gradient(loss, x, gx, "gem dx p=" + std::to_string(p0));
    expect_gradient(loss, p, gp, "gem dp p=" + std::to_string(p0));
  }
}

// ---- ArcMargin on cosine logits ------------------------------------------------------------------------

// Checks d(Σ G·arc_margin_forward(cos))/dcos against arc_margin_backward.
void check_arc_margin(const ArcMarginShape& s, const ArcMarginConfig& cfg, std::vector<double> cos,
                      const std::vector<int64_t>& labels, const double* class_margins, const std::string& what,
                      double h = 1e-6) {
  const auto g = random_vector(size_t(s.n * s.classes), -1.0, 1.0, 201);
  auto loss = [&] {
    std::vector<double> z(g.size());
    cpu::arc_margin_forward(s, cfg, cos.data(), labels.data(), class_margins, z.data());
    return dot(z, g);
  };
  auto gc = garbage<double>(cos.size());
  cpu::arc_margin_backward(s, cfg, cos.data(), labels.data(), class_margins, g.data(), gc.data());
  expect_gradient(loss, cos, gc, what, h);
}

// n rows of `classes` random cosines whose target entries are set to `targets`.
std::vector<double> cos_with_targets(int64_t classes, const std::vector<double>& targets, std::vector<int64_t>& labels,
                                     uint64_t seed) {
  const int64_t n = int64_t(targets.size());
  auto cos = random_vector(size_t(n * classes), -0.9, 0.9, seed);
  labels = random_labels(size_t(n), classes, seed + 1);
  for (int64_t i = 0; i < n; ++i) cos[size_t(i * classes + labels[size_t(i)])] = targets[size_t(i)];
  return cos;
}

TEST(GradCheck, ArcFaceBothSidesOfTheFallback) {
  const double m = 0.5, th = std::cos(std::numbers::pi - m);  // th ≈ −0.878
  const std::vector<double> targets{0.95, 0.6, 0.0, -0.5, th + 0.02, th - 0.02, -0.95, 0.999};
  std::vector<int64_t> labels;
  const auto cos = cos_with_targets(5, targets, labels, 210);
  ArcMarginConfig cfg;
  cfg.scale = 30.0;
  cfg.margin = m;
  check_arc_margin({int64_t(targets.size()), 5, 1}, cfg, cos, labels, kNoArray, "arcface");
}

TEST(GradCheck, ArcFaceNearCosineOne) {
  // sinθ → 0: the derivative grows like 1/sinθ and its curvature like 1/sinθ³, so the step shrinks with it.
  std::vector<int64_t> labels;
  const auto cos = cos_with_targets(3, {0.99999, 0.9999999}, labels, 215);
  ArcMarginConfig cfg;
  cfg.scale = 30.0;
  cfg.margin = 0.5;
  check_arc_margin({2, 3, 1}, cfg, cos, labels, kNoArray, "arcface near 1", 1e-10);
}

TEST(GradCheck, ArcFaceEasyMargin) {
  std::vector<int64_t> labels;
  const auto cos = cos_with_targets(4, {0.7, 0.2, -0.3, -0.97}, labels, 220);
  ArcMarginConfig cfg;
  cfg.scale = 45.0;
  cfg.margin = 0.4;
  cfg.easy_margin = true;
  check_arc_margin({4, 4, 1}, cfg, cos, labels, kNoArray, "easy_margin");
}

TEST(GradCheck, CosFaceAndCombined) {
  std::vector<int64_t> labels;
  const auto cos = cos_with_targets(6, {0.8, 0.1, -0.6, -0.99}, labels, 230);
  ArcMarginConfig cfg;
  cfg.kind = MarginKind::kCosFace;
  cfg.scale = 64.0;
  cfg.margin = 0.35;
  check_arc_margin({4, 6, 1}, cfg, cos, labels, kNoArray, "cosface");
  cfg.kind = MarginKind::kCombined;
  cfg.margin = 0.3;
  cfg.additive_margin = 0.15;
  check_arc_margin({4, 6, 1}, cfg, cos, labels, kNoArray, "combined");
}

TEST(GradCheck, PerClassMarginsWithRampUp) {
  std::vector<int64_t> labels;
  const auto cos = cos_with_targets(5, {0.8, 0.3, -0.4, -0.9, 0.55}, labels, 240);
  const std::vector<double> margins{0.2, 0.6, 0.35, 0.5, 0.1};
  ArcMarginConfig cfg;
  cfg.scale = 30.0;
  cfg.margin_scale = 0.7;
  check_arc_margin({5, 5, 1}, cfg, cos, labels, margins.data(), "per-class margins");
}

TEST(GradCheck, SubCenters) {
  const ArcMarginShape s{4, 5, 3};
  auto cos = random_vector(size_t(s.n * s.classes * s.sub_centers), -0.95, 0.95, 250);
  // Keep every class's best centre ahead of the runner-up by more than the FD step.
  for (size_t j = 0; j < cos.size(); j += 3) {
    double a = cos[j], b = cos[j + 1], c = cos[j + 2];
    const double mx = std::max({a, b, c});
    for (size_t q = 0; q < 3; ++q)
      if (cos[j + q] != mx && mx - cos[j + q] < 1e-3) cos[j + q] -= 1e-2;
  }
  const auto labels = random_labels(size_t(s.n), s.classes, 251);
  ArcMarginConfig cfg;
  cfg.scale = 20.0;
  cfg.margin = 0.5;
  check_arc_margin(s, cfg, cos, labels, kNoArray, "sub-centers");
}

// ---- L2 normalisation and the cosine GEMM -------------------------------------------------------------

TEST(GradCheck, L2Normalize) {
  const int64_t rows = 3, dim = 7;
  auto x = random_vector(size_t(rows * dim), -2.0, 2.0, 301);
  const auto g = random_vector(x.size(), -1.0, 1.0, 302);
  auto loss = [&] {
    std::vector<double> y(x.size());
    cpu::l2_normalize_forward(rows, dim, x.data(), 1e-12, y.data());
    return dot(y, g);
  };
  auto gx = garbage<double>(x.size());
  cpu::l2_normalize_backward(rows, dim, x.data(), g.data(), 1e-12, gx.data());
  expect_gradient(loss, x, gx, "l2_normalize");
}

TEST(GradCheck, CosineMatmul) {
  const cpu::CosineMatmulShape s{3, 4, 5};
  auto x = random_vector(size_t(s.n * s.d), -1.0, 1.0, 311);
  auto w = random_vector(size_t(s.k * s.d), -1.0, 1.0, 312);
  const auto g = random_vector(size_t(s.n * s.k), -1.0, 1.0, 313);
  auto loss = [&] {
    std::vector<double> c(g.size());
    cpu::cosine_matmul_forward(s, x.data(), w.data(), c.data());
    return dot(c, g);
  };
  auto gx = garbage<double>(x.size()), gw = garbage<double>(w.size());
  cpu::cosine_matmul_backward(s, x.data(), w.data(), g.data(), gx.data(), gw.data());
  expect_gradient(loss, x, gx, "cosine matmul dx");
  expect_gradient(loss, w, gw, "cosine matmul dw");
}

// ---- label-smoothing cross-entropy ---------------------------------------------------------------------

TEST(GradCheck, CrossEntropyWeightsAndReductions) {
  const CrossEntropyShape s{5, 7};
  auto z = random_vector(size_t(s.n * s.classes), -5.0, 5.0, 401);
  const auto y = random_labels(size_t(s.n), s.classes, 402);
  const auto w = random_vector(size_t(s.classes), 0.3, 2.5, 403);
  for (bool weighted : {false, true}) {
    for (double eps : {0.0, 0.1}) {
      for (Reduction r : {Reduction::kNone, Reduction::kMean, Reduction::kSum}) {
        const CrossEntropyConfig cfg{eps, r};
        const auto gl = random_vector(r == Reduction::kNone ? size_t(s.n) : 1, 0.5, 1.5, 404);
        const double* wp = weighted ? w.data() : nullptr;
        auto loss = [&] {
          std::vector<double> l(gl.size());
          cpu::cross_entropy_forward(s, cfg, z.data(), y.data(), wp, l.data());
          return dot(l, gl);
        };
        auto gz = garbage<double>(z.size());
        cpu::cross_entropy_backward(s, cfg, z.data(), y.data(), wp, gl.data(), gz.data());
        expect_gradient(
            loss, z, gz,
            "ce w=" + std::to_string(weighted) + " eps=" + std::to_string(eps) + " r=" + std::to_string(int(r)));
      }
    }
  }
}

// ---- fused ArcMargin → LS-CE ---------------------------------------------------------------------------

TEST(GradCheck, FusedArcMarginCrossEntropy) {
  const ArcMarginShape s{4, 6, 2};
  auto cos = random_vector(size_t(s.n * s.classes * s.sub_centers), -0.9, 0.9, 501);
  for (size_t j = 0; j < cos.size(); j += 2)
    if (std::abs(cos[j] - cos[j + 1]) < 1e-3) cos[j] += 1e-2;
  const auto labels = random_labels(size_t(s.n), s.classes, 502);
  const auto w = random_vector(size_t(s.classes), 0.3, 2.0, 503);
  ArcMarginConfig arc;
  arc.scale = 16.0;
  arc.margin = 0.5;
  for (Reduction r : {Reduction::kNone, Reduction::kMean, Reduction::kSum}) {
    const CrossEntropyConfig ce{0.1, r};
    const auto gl = random_vector(r == Reduction::kNone ? size_t(s.n) : 1, 0.5, 1.5, 504);
    auto loss = [&] {
      std::vector<double> l(gl.size());
      cpu::arc_margin_cross_entropy_forward(s, arc, ce, cos.data(), labels.data(), kNoArray, w.data(), l.data(),
                                            static_cast<double*>(nullptr));
      return dot(l, gl);
    };
    auto gc = garbage<double>(cos.size());
    cpu::arc_margin_cross_entropy_backward(s, arc, ce, cos.data(), labels.data(), kNoArray, w.data(), gl.data(),
                                           gc.data());
    expect_gradient(loss, cos, gc, "fused r=" + std::to_string(int(r)));
  }
}

// The whole head from raw embeddings x[n,d] and class weights w[k,d]: normalise both, cosine GEMM, fused
// ArcMargin → LS-CE; gradients chained back through the GEMM and the normalisations.
TEST(GradCheck, WholeHeadFromEmbeddings) {
  const int64_t n = 4, d = 6, classes = 5;
  auto x = random_vector(size_t(n * d), -1.0, 1.0, 601);
  auto w = random_vector(size_t(classes * d), -1.0, 1.0, 602);
  const auto labels = random_labels(size_t(n), classes, 603);
  ArcMarginConfig arc;
  arc.scale = 10.0;
  arc.margin = 0.3;
  const CrossEntropyConfig ce{0.1, Reduction::kMean};
  const ArcMarginShape as{n, classes, 1};
  const cpu::CosineMatmulShape ms{n, classes, d};
  auto forward = [&](std::vector<double>& xh, std::vector<double>& wh, std::vector<double>& cos, double* gcos) {
    xh.resize(x.size());
    wh.resize(w.size());
    cos.resize(size_t(n * classes));
    cpu::l2_normalize_forward(n, d, x.data(), 1e-12, xh.data());
    cpu::l2_normalize_forward(classes, d, w.data(), 1e-12, wh.data());
    cpu::cosine_matmul_forward(ms, xh.data(), wh.data(), cos.data());
    double l = NAN;
    cpu::arc_margin_cross_entropy_forward(as, arc, ce, cos.data(), labels.data(), kNoArray, kNoArray, &l, gcos);
    return l;
  };
  auto loss = [&] {
    std::vector<double> xh, wh, cos;
    return forward(xh, wh, cos, nullptr);
  };
  std::vector<double> xh, wh, cos, gcos(size_t(n * classes));
  forward(xh, wh, cos, gcos.data());
  std::vector<double> gxh(x.size()), gwh(w.size()), gx = garbage<double>(x.size()), gw = garbage<double>(w.size());
  cpu::cosine_matmul_backward(ms, xh.data(), wh.data(), gcos.data(), gxh.data(), gwh.data());
  cpu::l2_normalize_backward(n, d, x.data(), gxh.data(), 1e-12, gx.data());
  cpu::l2_normalize_backward(classes, d, w.data(), gwh.data(), 1e-12, gw.data());
  expect_gradient(loss, x, gx, "head dx");
  expect_gradient(loss, w, gw, "head dw");
}

}  // namespace
