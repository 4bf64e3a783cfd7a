// Unit tests of the fused ArcMargin → label-smoothing CE kernel (kernels/cpu/arc_margin_cross_entropy.hpp):
// it must give the same loss and d loss/d cos as composing arc_margin_forward → cross_entropy_forward /
// cross_entropy_backward → arc_margin_backward, over the whole option space, in float64 and float32.
#include <gtest/gtest.h>

#include <cmath>

#include "head_test_util.hpp"
#include "kernels/cpu/arc_margin.hpp"
#include "kernels/cpu/arc_margin_cross_entropy.hpp"
#include "kernels/cpu/cross_entropy.hpp"

namespace {

using namespace arclight;
using namespace arclight::test;
using namespace arclight::kernels;
namespace cpu = arclight::kernels::cpu;

struct Result {
  std::vector<double> loss;
  std::vector<double> grad;
};

template <typename T>
Result composed(const ArcMarginShape& s, const ArcMarginConfig& arc, const CrossEntropyConfig& ce,
                const std::vector<T>& cos, const std::vector<int64_t>& y, const T* cm, const T* w,
                const std::vector<T>& gl) {
  const CrossEntropyShape cs{s.n, s.classes};
  auto logits = garbage<T>(size_t(s.n * s.classes));
  cpu::arc_margin_forward(s, arc, cos.data(), y.data(), cm, logits.data());
  auto loss = garbage<T>(gl.size());
  cpu::cross_entropy_forward(cs, ce, logits.data(), y.data(), w, loss.data());
  auto gz = garbage<T>(logits.size());
  cpu::cross_entropy_backward(cs, ce, logits.data(), y.data(), w, gl.data(), gz.data());
  auto gc = garbage<T>(cos.size());
  cpu::arc_margin_backward(s, arc, cos.data(), y.data(), cm, gz.data(), gc.data());
  return {std::vector<double>(loss.begin(), loss.end()), std::vector<double>(gc.begin(), gc.end())};
}

template <typename T>
Result fused(const ArcMarginShape& s, const ArcMarginConfig& arc, const CrossEntropyConfig& ce,
             const std::vector<T>& cos, const std::vector<int64_t>& y, const T* cm, const T* w,
             const std::vector<T>& gl) {
  auto loss = garbage<T>(gl.size());
  auto gc = garbage<T>(cos.size());
  cpu::arc_margin_cross_entropy_forward(s, arc, ce, cos.data(), y.data(), cm, w, loss.data(), gc.data());
  // Forward's gradient is for a unit upstream gradient: scale it as an op's backward would.
  for (int64_t i = 0; i < s.n; ++i)
    for (int64_t j = 0; j < s.classes * s.sub_centers; ++j)
      gc[size_t(i * s.classes * s.sub_centers + j)] *= ce.reduction == Reduction::kNone ? gl[size_t(i)] : gl[0];
  // The backward entry point recomputes the same thing from cos and grad_loss.
  auto gb = garbage<T>(cos.size());
  cpu::arc_margin_cross_entropy_backward(s, arc, ce, cos.data(), y.data(), cm, w, gl.data(), gb.data());
  for (size_t i = 0; i < gc.size(); ++i)
    EXPECT_NEAR(double(gb[i]), double(gc[i]), 1e-6 * (1.0 + std::abs(double(gc[i]))));
  return {std::vector<double>(loss.begin(), loss.end()), std::vector<double>(gc.begin(), gc.end())};
}

TEST(ArcMarginCrossEntropy, FusedEqualsComposedEverywhere) {
  int combos = 0;
  for (int64_t k : {1, 3}) {
    const ArcMarginShape s{12, 17, k};
    auto cos = random_vector(size_t(s.n * s.classes * k), -1.0, 1.0, 700 + uint64_t(k));
    const auto y = random_labels(size_t(s.n), s.classes, 710);
    // Put some targets past the fallback threshold and at |cos| = 1.
    cos[size_t(0 * s.classes * k + y[0] * k)] = -0.97;
    cos[size_t(1 * s.classes * k + y[1] * k)] = 1.0;
    const auto w = random_vector(size_t(s.classes), 0.2, 2.0, 711);
    const auto cm = random_vector(size_t(s.classes), 0.1, 0.6, 712);
    for (auto kind : {MarginKind::kArcFace, MarginKind::kCosFace, MarginKind::kCombined}) {
      for (bool easy : {false, true}) {
        for (bool weighted : {false, true}) {
          for (bool per_class : {false, true}) {
            for (Reduction r : {Reduction::kNone, Reduction::kMean, Reduction::kSum}) {
              ArcMarginConfig arc;
              arc.kind = kind;
              arc.scale = 30.0;
              arc.margin = 0.5;
              arc.additive_margin = 0.1;
              arc.margin_scale = 0.8;
              arc.easy_margin = easy;
              const CrossEntropyConfig ce{0.1, r};
              const auto gl = random_vector(r == Reduction::kNone ? size_t(s.n) : 1, 0.5, 1.5, 713);
              const std::string what = "k=" + std::to_string(k) + " kind=" + std::to_string(int(kind)) +
                                       " easy=" + std::to_string(easy) + " w=" + std::to_string(weighted) +
                                       " pc=" + std::to_string(per_class) + " r=" + std::to_string(int(r));
              const double* wp = weighted ? w.data() : nullptr;
              const double* cp = per_class ? cm.data() : nullptr;
              const auto a = composed<double>(s, arc, ce, cos, y, cp, wp, gl);
              const auto b = fused<double>(s, arc, ce, cos, y, cp, wp, gl);
              expect_all_close(b.loss, a.loss, 1e-12, 1e-13, what + " loss f64");
              expect_all_close(b.grad, a.grad, 1e-10, 1e-13, what + " grad f64");
              // float32: fused vs composed, and both vs the float64 result.
              const auto cf = cast_vector<float>(cos), glf = cast_vector<float>(gl);
              const auto wf = cast_vector<float>(w), cmf = cast_vector<float>(cm);
              const float* wfp = weighted ? wf.data() : nullptr;
              const float* cfp = per_class ? cmf.data() : nullptr;
              const auto af = composed<float>(s, arc, ce, cf, y, cfp, wfp, glf);
              const auto bf = fused<float>(s, arc, ce, cf, y, cfp, wfp, glf);
              expect_all_close(bf.loss, af.loss, 1e-5, 1e-6, what + " loss f32");
              expect_all_close(bf.grad, af.grad, 1e-4, 1e-5, what + " grad f32");
              expect_all_close(bf.loss, a.loss, 1e-5, 1e-6, what + " loss f32 vs f64");
              ++combos;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(combos, 2 * 3 * 2 * 2 * 2 * 3);
}

TEST(ArcMarginCrossEntropy, ZeroMarginIsPlainScaledSoftmax) {
  // margin_scale 0 (start of a ramp): loss = CE(s·cos), gradient = s·(p − q).
  const ArcMarginShape s{3, 4, 1};
  const auto cos = random_vector(12, -1.0, 1.0, 720);
  const std::vector<int64_t> y{1, 3, 0};
  ArcMarginConfig arc;
  arc.scale = 5.0;
  arc.margin_scale = 0.0;
  double loss = NAN;
  auto gc = garbage<double>(12);
  cpu::arc_margin_cross_entropy_forward(s, arc, CrossEntropyConfig{0.0, Reduction::kSum}, cos.data(), y.data(),
                                        static_cast<const double*>(nullptr), static_cast<const double*>(nullptr), &loss,
                                        gc.data());
  double ref = 0.0;
  for (int64_t i = 0; i < 3; ++i) {
    double se = 0.0;
    for (int64_t j = 0; j < 4; ++j) se += std::exp(5.0 * cos[size_t(i * 4 + j)]);
    ref += std::log(se) - 5.0 * cos[size_t(i * 4 + y[size_t(i)])];
    for (int64_t j = 0; j < 4; ++j) {
      const double p = std::exp(5.0 * cos[size_t(i * 4 + j)]) / se;
      EXPECT_NEAR(gc[size_t(i * 4 + j)], 5.0 * (p - (j == y[size_t(i)] ? 1.0 : 0.0)), 1e-13);
    }
  }
  EXPECT_NEAR(loss, ref, 1e-13);
}

TEST(ArcMarginCrossEntropy, BadInputNamesTheFusedOp) {
  const ArcMarginShape s{2, 3, 1};
  std::vector<double> cos(6, 0.2), gc(6);
  std::vector<int64_t> y{0, 4};
  double loss = 0;
  ArcMarginConfig arc;
  const double* none = nullptr;
  expect_error(
      [&] {
        cpu::arc_margin_cross_entropy_forward(s, arc, {0.1, Reduction::kMean}, cos.data(), y.data(), none, none, &loss,
                                              gc.data());
      },
      {"arc_margin_cross_entropy_forward", "label 4 at row 1"});
  y = {0, 1};
  expect_error(
      [&] {
        cpu::arc_margin_cross_entropy_forward(s, arc, {-0.2, Reduction::kMean}, cos.data(), y.data(), none, none, &loss,
                                              gc.data());
      },
      {"arc_margin_cross_entropy_forward", "label_smoothing"});
  arc.margin = -0.5;
  expect_error(
      [&] {
        cpu::arc_margin_cross_entropy_forward(s, arc, {0.1, Reduction::kMean}, cos.data(), y.data(), none, none, &loss,
                                              gc.data());
      },
      {"arc_margin_cross_entropy_forward", "m=-0.5"});
  arc.margin = 0.5;
  expect_error(
      [&] {
        cpu::arc_margin_cross_entropy_backward(s, arc, {0.1, Reduction::kMean}, cos.data(), y.data(), none, none, none,
                                               gc.data());
      },
      {"arc_margin_cross_entropy_backward", "grad_loss"});
}

}  // namespace
