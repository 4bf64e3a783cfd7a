// Float64 gradchecks (central differences, arclight::gradcheck) of every retrieval-head op: gem w.r.t. x
// and p, cosine_logits, arc_margin (ArcFace on both sides of the θ + m > π branch, close to |cos| = 1,
// easy_margin, CosFace, combined, sub-centres, per-class margins, margin ramp-up), cross_entropy with and
// without class weights for every reduction, the fused arc_margin_cross_entropy for the same, and the whole
// head from a feature map through GeM → Linear → cosine → fused loss. One table, one mechanism (as
// tests/ops/test_gradcheck.cpp); gradcheck weighs each output with a random projection, so the fused op's
// non-unit upstream-gradient path is exercised too.
#include <functional>
#include <string>
#include <vector>

#include "head_util.hpp"

namespace {

using arclight::Tensor;
using namespace arclight::head_test;
namespace ops = arclight::ops;
using arclight::testing::leaf;

struct GradCase {
  std::string name;
  std::function<std::vector<Tensor>()> inputs;  // fresh f64 leaves
  std::function<Tensor(const std::vector<Tensor>&)> fn;
};

constexpr std::int64_t kN = 5, kC = 4;

ops::ArcMarginConfig arcface(double s = 8.0, double m = 0.5) {
  ops::ArcMarginConfig c;
  c.scale = s;
  c.margin = m;
  return c;
}

const std::vector<std::int64_t>& labels5() {
  static const std::vector<std::int64_t> y = {0, 3, 1, 3, 2};
  return y;
}

// Cosines with targets on both sides of th = cos(π − 0.5) = −0.8776: −0.95, −0.9 (fallback) and 0.3, 0.7,
// −0.5 (margin branch).
Tensor cos_leaf(std::int64_t k = 1, std::vector<double> targets = {-0.95, 0.3, -0.9, 0.7, -0.5}) {
  return leaf_from(cos_values(kN, kC, k, labels5(), targets, 11), {kN, kC * k});
}

std::vector<GradCase> cases() {
  const Tensor y = labels_from(labels5());
  const std::vector<double> wv = {0.5, 2.0, 1.0, 1.5};
  const Tensor w = from_vector(wv, {kC}, arclight::DType::f64);
  const Tensor margins = from_vector(std::vector<double>{0.2, 0.5, 0.35, 0.6}, {kC}, arclight::DType::f64);
  std::vector<GradCase> t;
  // ---- gem ----
  t.push_back({"gem_x_and_p", [] { return std::vector<Tensor>{leaf({2, 3, 3, 4}, 1, true, 0.05, 2.0), leaf({1}, 2, true, 2.0, 3.5)}; },
               [](auto& x) { return ops::gem(x[0], x[1]); }});
  t.push_back({"gem_noncontiguous_clamped", [] { return std::vector<Tensor>{leaf({2, 3, 4, 3}, 3, false, -1.0, 2.0), leaf({}, 4, true, 1.0, 4.0)}; },
               [](auto& x) { return ops::gem(x[0], x[1], 1e-3); }});
  t.push_back({"gem_p_only", [] {
                 Tensor x = leaf({1, 2, 2, 2}, 5, true, 0.1, 3.0);
                 x.set_requires_grad(false);
                 return std::vector<Tensor>{x, leaf({1}, 6, true, 1.0, 2.0)};
               },
               [](auto& x) { return ops::gem(x[0], x[1]); }});
  // ---- cosine logits ----
  t.push_back({"cosine_logits", [] { return std::vector<Tensor>{leaf({4, 6}, 7), leaf({5, 6}, 8)}; },
               [](auto& x) { return ops::cosine_logits(x[0], x[1]); }});
  t.push_back({"cosine_logits_noncontiguous", [] { return std::vector<Tensor>{leaf({3, 5}, 9, false), leaf({4, 5}, 10, false)}; },
               [](auto& x) { return ops::cosine_logits(x[0], x[1]); }});
  // ---- arc margin family ----
  t.push_back({"arcface_both_branches", [] { return std::vector<Tensor>{cos_leaf()}; },
               [y](auto& x) { return ops::arc_margin(x[0], y, arcface()); }});
  t.push_back({"arcface_near_one", [] { return std::vector<Tensor>{cos_leaf(1, {0.999, -0.999, 0.995})}; },
               [y](auto& x) { return ops::arc_margin(x[0], y, arcface(4.0)); }});
  t.push_back({"arcface_easy_margin", [] { return std::vector<Tensor>{cos_leaf(1, {-0.6, 0.4, -0.95, 0.8, 0.1})}; },
               [y](auto& x) {
                 auto c = arcface();
                 c.easy_margin = true;
                 return ops::arc_margin(x[0], y, c);
               }});
  t.push_back({"cosface", [] { return std::vector<Tensor>{cos_leaf()}; },
               [y](auto& x) {
                 auto c = arcface(10.0, 0.35);
                 c.kind = ops::MarginKind::kCosFace;
                 return ops::arc_margin(x[0], y, c);
               }});
  t.push_back({"combined", [] { return std::vector<Tensor>{cos_leaf()}; },
               [y](auto& x) {
                 auto c = arcface(6.0, 0.3);
                 c.kind = ops::MarginKind::kCombined;
                 c.additive_margin = 0.2;
                 return ops::arc_margin(x[0], y, c);
               }});
  t.push_back({"sub_center_k3", [] { return std::vector<Tensor>{cos_leaf(3)}; },
               [y](auto& x) {
                 auto c = arcface();
                 c.sub_centers = 3;
                 return ops::arc_margin(x[0], y, c);
               }});
  t.push_back({"class_margins_ramp", [] { return std::vector<Tensor>{cos_leaf()}; },
               [y, margins](auto& x) {
                 auto c = arcface();
                 c.margin_scale = 0.6;
                 return ops::arc_margin(x[0], y, c, margins);
               }});
  // ---- cross entropy ----
  for (auto r : {ops::Reduction::kNone, ops::Reduction::kMean, ops::Reduction::kSum}) {
    const std::string rn = r == ops::Reduction::kNone ? "none" : r == ops::Reduction::kMean ? "mean" : "sum";
    t.push_back({"ce_ls_weights_" + rn, [] { return std::vector<Tensor>{leaf({kN, kC}, 20, false)}; },
                 [y, w, r](auto& x) { return ops::cross_entropy(x[0], y, {0.1, r}, w); }});
    t.push_back({"ce_plain_" + rn, [] { return std::vector<Tensor>{leaf({kN, kC}, 21)}; },
                 [y, r](auto& x) { return ops::cross_entropy(x[0], y, {0.0, r}); }});
    t.push_back({"fused_ls_weights_" + rn, [] { return std::vector<Tensor>{cos_leaf()}; },
                 [y, w, r](auto& x) { return ops::arc_margin_cross_entropy(x[0], y, arcface(), {0.1, r}, w); }});
    t.push_back({"fused_subcenter_margins_" + rn, [] { return std::vector<Tensor>{cos_leaf(2)}; },
                 [y, margins, r](auto& x) {
                   auto c = arcface();
                   c.sub_centers = 2;
                   return ops::arc_margin_cross_entropy(x[0], y, c, {0.2, r}, Tensor(), margins);
                 }});
  }
  t.push_back({"fused_cosface_weights", [] { return std::vector<Tensor>{cos_leaf()}; },
               [y, w](auto& x) {
                 auto c = arcface(12.0, 0.3);
                 c.kind = ops::MarginKind::kCosFace;
                 return ops::arc_margin_cross_entropy(x[0], y, c, {0.1, ops::Reduction::kMean}, w);
               }});
  // ---- whole head: raw embedding and class weights to the loss ----
  t.push_back({"head_embedding_to_loss", [] { return std::vector<Tensor>{leaf({kN, 6}, 30), leaf({kC, 6}, 31, false)}; },
               [y, w](auto& x) {
                 return ops::arc_margin_cross_entropy(ops::cosine_logits(x[0], x[1]), y, arcface(), {0.1, ops::Reduction::kMean}, w);
               }});
  t.push_back({"head_featuremap_gem_linear_loss",
               [] {
                 return std::vector<Tensor>{leaf({kN, 3, 2, 3}, 40, true, 0.1, 2.0), leaf({1}, 41, true, 2.5, 3.5),
                                            leaf({6, 3}, 42), leaf({6}, 43), leaf({kC * 2, 6}, 44)};
               },
               [y](auto& x) {
                 auto c = arcface();
                 c.sub_centers = 2;
                 Tensor emb = ops::linear(ops::gem(x[0], x[1]), x[2], x[3]);
                 return ops::arc_margin_cross_entropy(ops::cosine_logits(emb, x[4]), y, c, {0.1, ops::Reduction::kMean});
               }});
  return t;
}

class HeadGrad : public ::testing::TestWithParam<GradCase> {};

TEST_P(HeadGrad, MatchesCentralDifferences) {
  const GradCase& c = GetParam();
  std::vector<Tensor> inputs = c.inputs();
  EXPECT_GRADCHECK(c.fn, inputs);
}

INSTANTIATE_TEST_SUITE_P(Ops, HeadGrad, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<GradCase>& i) { return i.param.name; });

// At |cos| = 1 exactly the finite-difference check does not apply (the clamp makes sinθ non-smooth), so
// the contract is checked directly: finite values and gradients, equal to phi'(c) with sinθ floored.
TEST(HeadGradEdge, ArcMarginAtUnitCosineIsFinite) {
  for (double c : {1.0, -1.0, 1.0 - 1e-12, -1.0 + 1e-12}) {
    const std::vector<std::int64_t> y = {1};
    Tensor cos = leaf_from({0.2, c, -0.3}, {1, 3});
    auto cfg = arcface(30.0, 0.5);
    Tensor logits = ops::arc_margin(cos, labels_from(y), cfg);
    Tensor loss = ops::sum(logits);
    loss.backward();
    const auto g = cos.grad().to_vector<double>();
    for (double v : logits.to_vector<double>()) EXPECT_TRUE(std::isfinite(v)) << "c=" << c;
    for (double v : g) EXPECT_TRUE(std::isfinite(v)) << "c=" << c;
    // Target gradient: s·phi'(c). Near +1 the margin branch with sinθ floored at 1e-4 (or its true value);
    // near −1 the fallback (c <= th), whose slope is 1.
    const double sin_t = std::max(std::sqrt(std::max(0.0, 1 - c * c)), 1e-4);
    const double expect = c > 0 ? 30.0 * (std::cos(0.5) + std::sin(0.5) * c / sin_t) : 30.0;
    EXPECT_NEAR(g[1], expect, 1e-9 * std::abs(expect)) << "c=" << c;
    EXPECT_DOUBLE_EQ(g[0], 30.0);
    // And through the fused loss: finite too.
    Tensor cos2 = leaf_from({0.2, c, -0.3}, {1, 3});
    ops::arc_margin_cross_entropy(cos2, labels_from(y), cfg, {0.1, ops::Reduction::kMean}).backward();
    for (double v : cos2.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(v)) << "fused, c=" << c;
  }
}

}  // namespace
