// Unit tests of the retrieval-head ops against slow, obvious references: gem against a loop over the
// definition; cosine_logits against l2_normalize + mm; arc_margin against the PyTorch reference formula
// written with generic ops (values and autograd gradients, every margin kind, sub-centres, per-class
// margins, ramp-up); cross_entropy against torch's weighted label-smoothing formula (every reduction,
// logits of ±1e4); the fused arc_margin_cross_entropy against the composed ops (values and gradients, f32
// and f64), its no-grad path; and bad input, each with its message.
#include <cmath>
#include <vector>

#include "head_util.hpp"

namespace {

using arclight::DType;
using arclight::Tensor;
using namespace arclight::head_test;
namespace ops = arclight::ops;
using arclight::testing::all_close;
using arclight::testing::leaf;

// ---- gem ------------------------------------------------------------------------------------------

TEST(GemOp, MatchesDefinitionInFloatAndDouble) {
  for (DType dt : {DType::f32, DType::f64}) {
    arclight::Generator gen(3);
    Tensor x = arclight::rand({2, 3, 4, 5}, dt, gen, -0.5, 3.0);
    Tensor p = arclight::full({1}, 2.7, dt);
    Tensor y = ops::gem(x, p);
    ASSERT_EQ(y.shape(), (arclight::Shape{2, 3}));
    const auto xv = x.to_vector<double>();
    std::vector<double> ref(6);
    for (int i = 0; i < 6; ++i) {
      double s = 0;
      for (int h = 0; h < 20; ++h) s += std::pow(std::max(xv[i * 20 + h], 1e-6), 2.7);
      ref[i] = std::pow(s / 20, 1 / 2.7);
    }
    EXPECT_TRUE(all_close(y, ref, dt == DType::f32 ? 1e-5 : 1e-12, 0));
  }
}

TEST(GemOp, NonContiguousInputEqualsContiguous) {
  Tensor x = leaf({2, 3, 4, 4}, 5, false, 0.1, 2.0);
  ASSERT_FALSE(x.is_contiguous());
  Tensor xc = ops::contiguous(x).detach();
  Tensor p = arclight::full({1}, 3.0, DType::f64);
  EXPECT_TRUE(all_close(ops::gem(x, p), ops::gem(xc, p), 1e-14, 0));
}

TEST(GemOp, GradientOfPMatchesClosedForm) {
  // One plane of two values: y = ((a^p + b^p)/2)^(1/p); dy/dp from the derivation in gem_math.hpp.
  const double a = 0.7, b = 1.9, p = 2.3;
  Tensor x = leaf_from({a, b}, {1, 1, 1, 2});
  Tensor pt = leaf_from({p}, {1});
  Tensor y = ops::gem(x, pt);
  y.backward(arclight::ones({1, 1}, DType::f64));
  const double M = (std::pow(a, p) + std::pow(b, p)) / 2, yv = std::pow(M, 1 / p);
  const double dM = (std::pow(a, p) * std::log(a) + std::pow(b, p) * std::log(b)) / 2;
  EXPECT_NEAR(pt.grad().item(), yv * (-std::log(M) / (p * p) + dM / (p * M)), 1e-12);
  EXPECT_NEAR(x.grad().to_vector<double>()[0], yv / (2 * M) * std::pow(a, p - 1), 1e-12);
}

TEST(GemOp, BadInput) {
  Tensor p = arclight::full({1}, 3.0);
  EXPECT_ERROR_WITH(ops::gem(arclight::ones({2, 3, 4}), p), "gem", "rank 4", "[2, 3, 4]");
  EXPECT_ERROR_WITH(ops::gem(arclight::ones({1, 2, 2, 2}), arclight::full({2}, 3.0)), "gem", "exactly one value");
  EXPECT_ERROR_WITH(ops::gem(arclight::ones({1, 2, 2, 2}), arclight::full({1}, 3.0, DType::f64)), "gem",
                    "dtype mismatch");
  EXPECT_ERROR_WITH(ops::gem(arclight::ones({1, 2, 2, 2}), arclight::full({1}, -1.0)), "gem", "p > 0");
  EXPECT_ERROR_WITH(ops::gem(arclight::empty({1, 2, 0, 2}), p), "gem", "H*W > 0");
  EXPECT_ERROR_WITH(ops::gem(arclight::ones({1, 2, 2, 2}), p, 0.0), "gem", "eps > 0");
}

// ---- cosine logits ------------------------------------------------------------------------------

TEST(CosineLogits, EqualsNormalizeThenMatmulWithGradients) {
  Tensor x1 = leaf({6, 8}, 1), w1 = leaf({10, 8}, 2, false);
  Tensor x2 = leaf({6, 8}, 1), w2 = leaf({10, 8}, 2, false);
  Tensor c1 = ops::cosine_logits(x1, w1);
  Tensor c2 = ops::mm(ops::l2_normalize(x2, 1), ops::transpose(ops::l2_normalize(w2, 1), 0, 1));
  EXPECT_TRUE(all_close(c1, c2, 1e-12, 1e-14));
  for (double v : c1.to_vector<double>()) EXPECT_LE(std::abs(v), 1.0 + 1e-12);
  Tensor r = leaf({6, 10}, 3);
  ops::sum(ops::mul(c1, r.detach())).backward();
  ops::sum(ops::mul(c2, r.detach())).backward();
  EXPECT_TRUE(all_close(x1.grad(), x2.grad(), 1e-10, 1e-12));
  EXPECT_TRUE(all_close(w1.grad(), w2.grad(), 1e-10, 1e-12));
}

TEST(CosineLogits, ChunkedWeightsEqualOneShot) {
  // D = 16384 in f64 makes cosine_logits normalise w in chunks of 64 rows: 150 classes take 3 chunks.
  Tensor x1 = leaf({3, 16384}, 4), w1 = leaf({150, 16384}, 5);
  Tensor x2 = leaf({3, 16384}, 4), w2 = leaf({150, 16384}, 5);
  ASSERT_LT(ops::detail::cosine_chunk_rows<double>(150, 16384), 150);
  Tensor c1 = ops::cosine_logits(x1, w1);
  Tensor c2 = ops::mm(ops::l2_normalize(x2, 1), ops::transpose(ops::l2_normalize(w2, 1), 0, 1));
  EXPECT_TRUE(all_close(c1, c2, 1e-12, 1e-14));
  Tensor r = leaf({3, 150}, 6).detach();
  ops::sum(ops::mul(c1, r)).backward();
  ops::sum(ops::mul(c2, r)).backward();
  EXPECT_TRUE(all_close(x1.grad(), x2.grad(), 1e-10, 1e-14));
  EXPECT_TRUE(all_close(w1.grad(), w2.grad(), 1e-10, 1e-14));
}

TEST(CosineLogits, BadInput) {
  EXPECT_ERROR_WITH(ops::cosine_logits(arclight::ones({3, 4}), arclight::ones({5, 6})), "cosine_logits",
                    "embedding size differs");
  EXPECT_ERROR_WITH(ops::cosine_logits(arclight::ones({4}), arclight::ones({5, 4})), "cosine_logits", "rank 2");
  EXPECT_ERROR_WITH(ops::cosine_logits(arclight::ones({3, 4}), arclight::ones({2, 5, 4})), "cosine_logits",
                    "class weights w of rank 2");
  EXPECT_ERROR_WITH(ops::cosine_logits(arclight::ones({3, 4}), arclight::ones({5, 4}, DType::f64)), "cosine_logits",
                    "dtype mismatch");
}

// ---- arc margin ----------------------------------------------------------------------------------

struct MarginCase {
  const char* name;
  ops::ArcMarginConfig cfg;
  std::vector<double> class_margins;
};

std::vector<MarginCase> margin_cases() {
  std::vector<MarginCase> v;
  ops::ArcMarginConfig a;
  a.scale = 30;
  a.margin = 0.5;
  v.push_back({"arcface", a, {}});
  auto e = a;
  e.easy_margin = true;
  v.push_back({"easy", e, {}});
  auto cf = a;
  cf.kind = ops::MarginKind::kCosFace;
  cf.margin = 0.35;
  v.push_back({"cosface", cf, {}});
  auto cb = a;
  cb.kind = ops::MarginKind::kCombined;
  cb.margin = 0.3;
  cb.additive_margin = 0.15;
  v.push_back({"combined", cb, {}});
  auto sc = a;
  sc.sub_centers = 3;
  v.push_back({"subcenter", sc, {}});
  auto ramp = a;
  ramp.margin_scale = 0.25;
  v.push_back({"ramp_class_margins", ramp, {0.1, 0.2, 0.3, 0.4, 0.5, 0.6}});
  return v;
}

TEST(ArcMarginOp, MatchesReferenceFormulaValuesAndGradients) {
  const std::int64_t n = 8, classes = 6;
  const auto y = random_labels(n, classes, 17);
  for (const auto& mc : margin_cases()) {
    for (DType dt : {DType::f64, DType::f32}) {
      const std::int64_t k = mc.cfg.sub_centers;
      const auto vals = cos_values(n, classes, k, y, {-0.97, 0.2, -0.9, 0.85, -0.3, 0.6, 0.05, -0.6}, 5);
      Tensor c1 = leaf_from(vals, {n, classes * k}, dt), c2 = leaf_from(vals, {n, classes * k}, dt);
      Tensor margins = mc.class_margins.empty() ? Tensor() : arclight::from_vector(mc.class_margins, {classes}, dt);
      Tensor z1 = ops::arc_margin(c1, labels_from(y), mc.cfg, margins);
      Tensor z2 = arc_margin_reference(c2, y, mc.cfg, mc.class_margins);
      const double tol = dt == DType::f32 ? 2e-6 : 1e-12;
      EXPECT_TRUE(all_close(z1, z2, tol, tol * 30)) << mc.name;
      Tensor r = arclight::randn({n, classes}, dt);
      ops::sum(ops::mul(z1, r)).backward();
      ops::sum(ops::mul(z2, r)).backward();
      EXPECT_TRUE(all_close(c1.grad(), c2.grad(), tol * 10, tol * 300)) << mc.name;
    }
  }
}

TEST(ArcMarginOp, ZeroMarginScaleIsScaledCosine) {
  const auto y = random_labels(4, 5, 2);
  Tensor c = leaf_from(cos_values(4, 5, 1, y, {0.5}, 3), {4, 5});
  ops::ArcMarginConfig cfg;
  cfg.scale = 16;
  cfg.margin_scale = 0.0;
  EXPECT_TRUE(all_close(ops::arc_margin(c, labels_from(y), cfg), ops::mul(c, 16.0), 1e-14, 1e-13));
}

TEST(ArcMarginOp, BadInput) {
  Tensor c = arclight::full({3, 6}, 0.1);
  Tensor y = labels_from({0, 1, 2});
  ops::ArcMarginConfig cfg;
  EXPECT_ERROR_WITH(ops::arc_margin(arclight::full({6}, 0.1), labels_from({0}), cfg), "arc_margin", "rank 2");
  EXPECT_ERROR_WITH(ops::arc_margin(c, labels_from({0, 1, 6}), cfg), "arc_margin", "label 6 at row 2",
                    "0 <= label < 6");
  EXPECT_ERROR_WITH(ops::arc_margin(c, labels_from({0, -1, 2}), cfg), "arc_margin", "label -1");
  EXPECT_ERROR_WITH(ops::arc_margin(c, labels_from({0, 1}), cfg), "arc_margin", "labels of shape [3]");
  EXPECT_ERROR_WITH(ops::arc_margin(c, arclight::from_vector(std::vector<int>{0, 1, 2}, {3}, DType::i32), cfg),
                    "arc_margin", "dtype i64");
  auto neg = cfg;
  neg.margin = -0.1;
  EXPECT_ERROR_WITH(ops::arc_margin(c, y, neg), "arc_margin", "margin m >= 0", "-0.1");
  auto big = cfg;
  big.margin = 3.5;
  EXPECT_ERROR_WITH(ops::arc_margin(c, y, big), "arc_margin", "< pi");
  auto s0 = cfg;
  s0.scale = 0;
  EXPECT_ERROR_WITH(ops::arc_margin(c, y, s0), "arc_margin", "scale s > 0");
  auto sub = cfg;
  sub.sub_centers = 4;
  EXPECT_ERROR_WITH(ops::arc_margin(c, y, sub), "arc_margin", "sub_centers=4");
  EXPECT_ERROR_WITH(ops::arc_margin(c, y, cfg, arclight::full({5}, 0.2)), "arc_margin", "class_margins of shape [6]");
  EXPECT_ERROR_WITH(ops::arc_margin(c, y, cfg, arclight::full({6}, -0.2)), "arc_margin", "margin m >= 0",
                    "for class 0");
}

// ---- cross entropy -------------------------------------------------------------------------------

TEST(CrossEntropyOp, MatchesTorchFormulaEveryReduction) {
  const std::int64_t n = 7, k = 5;
  const auto y = random_labels(n, k, 8);
  const std::vector<double> w = {0.3, 1.7, 1.0, 0.0, 2.2};
  for (DType dt : {DType::f64, DType::f32}) {
    for (auto r : {ops::Reduction::kNone, ops::Reduction::kMean, ops::Reduction::kSum}) {
      for (bool weighted : {false, true}) {
        for (double eps : {0.0, 0.1, 1.0}) {
          Tensor z1 = leaf({n, k}, 9);
          Tensor z2 = leaf({n, k}, 9);
          z1 = ops::to(z1, dt).detach().set_requires_grad(true);
          z2 = ops::to(z2, dt).detach().set_requires_grad(true);
          Tensor wt = weighted ? arclight::from_vector(w, {k}, dt) : Tensor();
          const ops::CrossEntropyConfig cfg{eps, r};
          Tensor l1 = ops::cross_entropy(z1, labels_from(y), cfg, wt);
          Tensor l2 = cross_entropy_reference(z2, y, cfg, weighted ? w : std::vector<double>{});
          const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
          EXPECT_TRUE(all_close(l1, l2, tol, tol)) << "eps " << eps << " weighted " << weighted;
          Tensor g = arclight::rand(l1.shape(), dt, arclight::default_generator(), 0.5, 1.5);
          l1.backward(g);
          l2.backward(g);
          EXPECT_TRUE(all_close(z1.grad(), z2.grad(), tol, tol)) << "eps " << eps << " weighted " << weighted;
        }
      }
    }
  }
}

TEST(CrossEntropyOp, StableAtHugeLogits) {
  // Logits of ±1e4: the composed log_softmax reference stays exact too, so compare with it.
  const std::vector<std::int64_t> y = {0, 2};
  Tensor z = leaf_from({1e4, -1e4, 9990.0, -1e4, 1e4, 1e4 - 1}, {2, 3});
  Tensor l = ops::cross_entropy(z, labels_from(y), {0.1, ops::Reduction::kNone});
  Tensor ref = cross_entropy_reference(z.detach(), y, {0.1, ops::Reduction::kNone});
  EXPECT_TRUE(all_close(l, ref, 1e-12, 1e-9));
  for (double v : l.to_vector<double>()) EXPECT_TRUE(std::isfinite(v));
  // Row 0: target is the max; the smoothing terms are ~ε/K·(2e4 and 10).
  EXPECT_GT(l.to_vector<double>()[0], 600.0);
}

TEST(CrossEntropyOp, BadInput) {
  Tensor z = arclight::ones({3, 4});
  Tensor y = labels_from({0, 1, 3});
  EXPECT_ERROR_WITH(ops::cross_entropy(arclight::ones({4}), labels_from({0})), "cross_entropy", "rank 2");
  EXPECT_ERROR_WITH(ops::cross_entropy(z, labels_from({0, 1, 4})), "cross_entropy", "label 4 at row 2",
                    "0 <= label < 4");
  EXPECT_ERROR_WITH(ops::cross_entropy(z, y, {-0.1, ops::Reduction::kMean}), "cross_entropy",
                    "label_smoothing in [0, 1]", "-0.1");
  EXPECT_ERROR_WITH(ops::cross_entropy(z, y, {1.5, ops::Reduction::kMean}), "cross_entropy", "label_smoothing");
  EXPECT_ERROR_WITH(ops::cross_entropy(z, y, {}, arclight::ones({3})), "cross_entropy", "class weights of shape [4]");
  EXPECT_ERROR_WITH(ops::cross_entropy(z, y, {}, arclight::from_vector(std::vector<double>{1, -1, 1, 1}, {4}, DType::f32)),
                    "cross_entropy", "finite and >= 0");
  EXPECT_ERROR_WITH(ops::cross_entropy(z, y, {}, arclight::from_vector(std::vector<double>{0, 0, 1, 0}, {4}, DType::f32)),
                    "cross_entropy", "sum to 0");
  EXPECT_ERROR_WITH(ops::cross_entropy(z, labels_from({0, 1})), "cross_entropy", "labels of shape [3]");
}

// ---- fused == composed -----------------------------------------------------------------------------

TEST(ArcMarginCrossEntropyOp, FusedEqualsComposedValuesAndGradients) {
  const std::int64_t n = 9, classes = 6;
  const auto y = random_labels(n, classes, 23);
  const std::vector<double> w = {0.5, 1.5, 1.0, 2.0, 0.7, 1.1};
  for (const auto& mc : margin_cases()) {
    for (DType dt : {DType::f64, DType::f32}) {
      for (auto r : {ops::Reduction::kNone, ops::Reduction::kMean, ops::Reduction::kSum}) {
        const std::int64_t k = mc.cfg.sub_centers;
        const auto vals = cos_values(n, classes, k, y, {-0.95, 0.4, -0.88, 0.9, 0.1}, 31);
        Tensor c1 = leaf_from(vals, {n, classes * k}, dt), c2 = leaf_from(vals, {n, classes * k}, dt);
        Tensor margins = mc.class_margins.empty() ? Tensor() : arclight::from_vector(mc.class_margins, {classes}, dt);
        Tensor wt = arclight::from_vector(w, {classes}, dt);
        const ops::CrossEntropyConfig ce{0.1, r};
        Tensor fused = ops::arc_margin_cross_entropy(c1, labels_from(y), mc.cfg, ce, wt, margins);
        Tensor composed = ops::cross_entropy(ops::arc_margin(c2, labels_from(y), mc.cfg, margins), labels_from(y), ce, wt);
        const double tol = dt == DType::f32 ? 1e-5 : 1e-12;
        EXPECT_TRUE(all_close(fused, composed, tol, tol)) << mc.name;
        for (bool unit : {true, false}) {
          c1.zero_grad();
          c2.zero_grad();
          Tensor g = unit ? arclight::ones(fused.shape(), dt) : arclight::rand(fused.shape(), dt, arclight::default_generator(), -2, 2);
          fused.backward(g, true);
          composed.backward(g, true);
          EXPECT_TRUE(all_close(c1.grad(), c2.grad(), tol, tol)) << mc.name << " unit upstream " << unit;
        }
      }
    }
  }
}

TEST(ArcMarginCrossEntropyOp, NoGradComputesLossOnly) {
  const auto y = random_labels(4, 5, 2);
  Tensor c = leaf_from(cos_values(4, 5, 1, y, {0.3}, 3), {4, 5});
  ops::ArcMarginConfig cfg;
  Tensor with_grad = ops::arc_margin_cross_entropy(c, labels_from(y), cfg);
  EXPECT_TRUE(with_grad.requires_grad());
  arclight::NoGradGuard ng;
  Tensor plain = ops::arc_margin_cross_entropy(c, labels_from(y), cfg);
  EXPECT_FALSE(plain.requires_grad());
  EXPECT_EQ(plain.grad_fn(), nullptr);
  EXPECT_DOUBLE_EQ(plain.item(), with_grad.item());
}

TEST(ArcMarginCrossEntropyOp, BadInput) {
  Tensor c = arclight::full({3, 4}, 0.2);
  Tensor y = labels_from({0, 1, 3});
  ops::ArcMarginConfig cfg;
  EXPECT_ERROR_WITH(ops::arc_margin_cross_entropy(c, labels_from({0, 1, 9}), cfg), "arc_margin_cross_entropy",
                    "label 9 at row 2");
  EXPECT_ERROR_WITH(ops::arc_margin_cross_entropy(c, y, cfg, {-0.5, ops::Reduction::kMean}),
                    "arc_margin_cross_entropy", "label_smoothing in [0, 1]");
  auto neg = cfg;
  neg.margin = -1;
  EXPECT_ERROR_WITH(ops::arc_margin_cross_entropy(c, y, neg), "arc_margin_cross_entropy", "margin m >= 0");
  EXPECT_ERROR_WITH(ops::arc_margin_cross_entropy(c, y, cfg, {}, arclight::ones({5})), "arc_margin_cross_entropy",
                    "class weights of shape [4]");
}

}  // namespace
