// Unit tests of the retrieval-head modules and initialisers: parameter names (timm/PyTorch keys), shapes,
// no-weight-decay flags, initialisation bounds and statistics, forward equal to the underlying ops,
// train/eval propagation, GeM's p >= 1 mechanism, ArcMargin's inference / fused-loss / ramp-up / per-class
// margin paths, the loss module, the class-weight and dynamic-margin helpers, and bad arguments.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "head_util.hpp"

namespace {

using arclight::DType;
using arclight::Tensor;
using namespace arclight::head_test;
namespace ops = arclight::ops;
namespace nn = arclight::nn;
namespace init = arclight::nn::init;
using arclight::testing::all_close;

struct Stats {
  double mean, std, min, max;
};
Stats stats(const Tensor& t) {
  const auto v = t.to_vector<double>();
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return {mean, std::sqrt(ss / double(v.size())), *std::min_element(v.begin(), v.end()),
          *std::max_element(v.begin(), v.end())};
}

// ---- init ----------------------------------------------------------------------------------------

TEST(Init, FansAndGains) {
  const auto f = init::compute_fans(arclight::zeros({16, 8, 3, 3}));
  EXPECT_EQ(f.fan_in, 8 * 9);
  EXPECT_EQ(f.fan_out, 16 * 9);
  EXPECT_DOUBLE_EQ(init::calculate_gain("relu"), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(init::calculate_gain("leaky_relu", std::sqrt(5.0)), std::sqrt(1.0 / 3.0));
  EXPECT_ERROR_WITH(init::compute_fans(arclight::zeros({5})), "nn::init", "rank >= 2");
  EXPECT_ERROR_WITH(init::calculate_gain("swishy"), "nn::init", "unsupported nonlinearity 'swishy'");
}

TEST(Init, UniformBoundsAndReproducibility) {
  Tensor a = arclight::empty({128, 64}), b = arclight::empty({128, 64});
  arclight::Generator g1(7), g2(7);
  init::kaiming_uniform_(a, std::sqrt(5.0), init::FanMode::kFanIn, "leaky_relu", g1);
  init::kaiming_uniform_(b, std::sqrt(5.0), init::FanMode::kFanIn, "leaky_relu", g2);
  EXPECT_TRUE(all_close(a, b, 0, 0));
  const double bound = 1.0 / std::sqrt(64.0);
  const Stats s = stats(a);
  EXPECT_GE(s.min, -bound);
  EXPECT_LT(s.max, bound);
  EXPECT_GT(s.max, 0.98 * bound);  // fills the interval
  EXPECT_NEAR(s.std, bound / std::sqrt(3.0), 0.02 * bound);
  Tensor x = arclight::empty({100, 300});
  init::xavier_uniform_(x, 2.0);
  const double xb = 2.0 * std::sqrt(6.0 / 400.0);
  const Stats sx = stats(x);
  EXPECT_GE(sx.min, -xb);
  EXPECT_LT(sx.max, xb);
  EXPECT_GT(sx.max, 0.98 * xb);
}

TEST(Init, NormalFamiliesHaveTheirStd) {
  Tensor k = arclight::empty({256, 128, 3, 3});
  init::kaiming_normal_(k, 0.0, init::FanMode::kFanOut, "relu");
  const Stats sk = stats(k);
  const double want = std::sqrt(2.0) / std::sqrt(256.0 * 9);
  EXPECT_NEAR(sk.std, want, 0.01 * want);
  EXPECT_NEAR(sk.mean, 0.0, 0.01 * want);
  Tensor x = arclight::empty({300, 200}, DType::f64);
  init::xavier_normal_(x);
  EXPECT_NEAR(stats(x).std, std::sqrt(2.0 / 500.0), 0.02 * std::sqrt(2.0 / 500.0));
}

TEST(Init, TruncNormalStaysInBoundsWithTruncatedMoments) {
  Tensor t = arclight::empty({200, 200});
  arclight::Generator gen(11);
  init::trunc_normal_(t, 0.5, 1.0, -0.5, 1.5, gen);  // ±1 std around the mean
  const Stats s = stats(t);
  EXPECT_GE(s.min, -0.5);
  EXPECT_LE(s.max, 1.5);
  // Var of N(0,1) truncated to [−1, 1]: 1 − 2φ(1)/(Φ(1) − Φ(−1)) = 0.29112.
  EXPECT_NEAR(s.std, std::sqrt(0.29112), 0.01);
  EXPECT_NEAR(s.mean, 0.5, 0.01);
  Tensor small = arclight::empty({64, 64});
  init::trunc_normal_(small, 0.0, 0.02);  // timm's ViT init: bounds ±2 far outside
  EXPECT_NEAR(stats(small).std, 0.02, 0.001);
  EXPECT_ERROR_WITH(init::trunc_normal_(small, 0.0, 1.0, 8.0, 9.0), "trunc_normal_", "expected at least 1e-3");
  EXPECT_ERROR_WITH(init::trunc_normal_(small, 0.0, 1.0, 1.0, -1.0), "trunc_normal_", "a < b");
  EXPECT_ERROR_WITH(init::trunc_normal_(small, 0.0, -1.0), "trunc_normal_", "std > 0");
}

TEST(Init, InPlaceOnParametersAndConstants) {
  Tensor p = arclight::randn({3, 4});
  p.set_requires_grad(true);
  init::zeros_(p);  // works on a leaf that requires grad (NoGradGuard inside)
  for (double v : p.to_vector<double>()) EXPECT_EQ(v, 0.0);
  init::ones_(p);
  for (double v : p.to_vector<double>()) EXPECT_EQ(v, 1.0);
  EXPECT_TRUE(p.requires_grad());
  EXPECT_EQ(p.grad_fn(), nullptr);
  init::constant_(p, -2.5);
  for (double v : p.to_vector<double>()) EXPECT_EQ(v, -2.5);
}

// ---- Linear --------------------------------------------------------------------------------------

TEST(LinearModule, NamesShapesInitAndForward) {
  arclight::Generator gen(5);
  nn::Linear lin(64, 32, true, gen);
  const auto ps = lin.named_parameters();
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0].name, "weight");
  EXPECT_EQ(ps[0].tensor.shape(), (arclight::Shape{32, 64}));
  EXPECT_FALSE(ps[0].no_weight_decay);
  EXPECT_EQ(ps[1].name, "bias");
  EXPECT_EQ(ps[1].tensor.shape(), (arclight::Shape{32}));
  EXPECT_TRUE(ps[1].no_weight_decay);
  const double bound = 1.0 / 8.0;  // 1/√in for both (PyTorch's reset_parameters)
  EXPECT_LT(stats(lin.weight()).max, bound);
  EXPECT_GE(stats(lin.weight()).min, -bound);
  EXPECT_GT(stats(lin.weight()).max, 0.9 * bound);
  EXPECT_LT(stats(lin.bias()).max, bound);
  Tensor x = arclight::randn({5, 64});
  EXPECT_TRUE(all_close(lin(x), ops::add(ops::mm(x, ops::transpose(lin.weight(), 0, 1)), lin.bias()), 1e-6, 1e-6));
  nn::Linear nb(4, 3, false);
  EXPECT_EQ(nb.named_parameters().size(), 1u);
  EXPECT_FALSE(nb.bias().defined());
  EXPECT_ERROR_WITH(lin(arclight::randn({5, 63})), "nn::Linear", "[..., 64]");
  EXPECT_ERROR_WITH(nn::Linear(0, 3), "nn::Linear", "in_features > 0");
}

// ---- GeM -----------------------------------------------------------------------------------------

TEST(GeMModule, ParameterAndForward) {
  nn::GeM gem;
  const auto ps = gem.named_parameters();
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].name, "p");
  EXPECT_EQ(ps[0].tensor.shape(), (arclight::Shape{1}));
  EXPECT_TRUE(ps[0].no_weight_decay);
  EXPECT_DOUBLE_EQ(gem.p(), 3.0);
  Tensor x = arclight::rand({2, 4, 3, 3}, DType::f32, arclight::default_generator(), 0.0, 2.0);
  EXPECT_TRUE(all_close(gem(x), ops::gem(x, arclight::full({1}, 3.0)), 0, 0));
  ops::sum(gem(x)).backward();
  ASSERT_TRUE(gem.p_tensor().grad().defined());
  EXPECT_NE(gem.p_tensor().grad().item(), 0.0);
}

TEST(GeMModule, ClampKeepsPAboveOne) {
  auto seq = std::make_shared<nn::Sequential>();
  auto gem = std::make_shared<nn::GeM>(3.0);
  auto inner = std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{gem});
  seq->push_back(inner);
  {
    arclight::NoGradGuard ng;
    Tensor p = gem->p_tensor();
    arclight::fill_(p, 0.4);
  }
  Tensor x = arclight::rand({1, 2, 2, 2}, DType::f32, arclight::default_generator(), 0.5, 1.0);
  EXPECT_ERROR_WITH(gem->forward(x), "nn::GeM", "p=0.4", "clamp_p_");
  EXPECT_EQ(nn::clamp_gem_p_(*seq), 1);
  EXPECT_DOUBLE_EQ(gem->p(), 1.0);
  EXPECT_NO_THROW(gem->forward(x));
  {
    arclight::NoGradGuard ng;
    Tensor p = gem->p_tensor();
    arclight::fill_(p, 2.5);
  }
  gem->clamp_p_();
  EXPECT_DOUBLE_EQ(gem->p(), 2.5);  // untouched above the floor
  EXPECT_ERROR_WITH(nn::GeM(0.5), "nn::GeM", "p_init >= p_min");
}

// ---- ArcMargin -----------------------------------------------------------------------------------

TEST(ArcMarginModule, ParameterInitAndPaths) {
  ops::ArcMarginConfig cfg;
  cfg.scale = 30;
  cfg.margin = 0.4;
  cfg.sub_centers = 2;
  arclight::Generator gen(9);
  nn::ArcMargin head(16, 10, cfg, gen);
  const auto ps = head.named_parameters();
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].name, "weight");
  EXPECT_EQ(ps[0].tensor.shape(), (arclight::Shape{20, 16}));
  EXPECT_FALSE(ps[0].no_weight_decay);
  const double xb = std::sqrt(6.0 / (16 + 20));
  EXPECT_LT(stats(head.weight()).max, xb);
  EXPECT_GT(stats(head.weight()).max, 0.8 * xb);

  Tensor x = arclight::randn({6, 16});
  const auto yv = random_labels(6, 10, 4);
  Tensor y = labels_from(yv);
  Tensor logits = head.forward(x, y);
  EXPECT_TRUE(all_close(logits, ops::arc_margin(ops::cosine_logits(x, head.weight()), y, cfg), 0, 0));
  // Fused loss == composed CE of the logits.
  const ops::CrossEntropyConfig ce{0.1, ops::Reduction::kMean};
  EXPECT_NEAR(head.loss(x, y, ce).item(), ops::cross_entropy(logits, y, ce).item(), 1e-5);
  // Inference: class cosine = max over the two centres, no margin, no scale.
  Tensor cosv = head.cosine(x);
  ASSERT_EQ(cosv.shape(), (arclight::Shape{6, 10}));
  const auto full = ops::cosine_logits(x, head.weight()).to_vector<double>();
  const auto cv = cosv.to_vector<double>();
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 10; ++j) EXPECT_FLOAT_EQ(cv[i * 10 + j], std::max(full[i * 20 + 2 * j], full[i * 20 + 2 * j + 1]));
  EXPECT_TRUE(all_close(head.forward(x), cosv, 0, 0));
  // Non-target logits are s·cos; the targets carry the margin (smaller).
  const auto lv = logits.to_vector<double>();
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 10; ++j) {
      if (j == yv[i]) EXPECT_LT(lv[i * 10 + j], 30 * cv[i * 10 + j]);
      else EXPECT_NEAR(lv[i * 10 + j], 30 * cv[i * 10 + j], 1e-4);
    }
}

TEST(ArcMarginModule, MarginRampAndClassMargins) {
  ops::ArcMarginConfig cfg;
  cfg.scale = 10;
  cfg.margin = 0.5;
  nn::ArcMargin head(8, 4, cfg);
  Tensor x = arclight::randn({5, 8});
  Tensor y = labels_from({0, 1, 2, 3, 0});
  head.set_margin_scale(0.0);
  EXPECT_TRUE(all_close(head.forward(x, y), ops::mul(head.cosine(x), 10.0), 1e-6, 1e-5));
  head.set_margin_scale(0.5);
  auto half = cfg;
  half.margin = 0.25;
  EXPECT_TRUE(all_close(head.forward(x, y), ops::arc_margin(head.cosine(x), y, half), 1e-6, 1e-5));
  head.set_margin_scale(1.0);
  Tensor m = nn::dynamic_margins({100, 10, 1, 1000}, 0.5, 0.05, 0.25);
  const auto mv = m.to_vector<double>();
  EXPECT_NEAR(mv[2], 0.55, 1e-6);
  EXPECT_NEAR(mv[0], 0.5 * std::pow(100.0, -0.25) + 0.05, 1e-6);
  head.set_class_margins(m);
  EXPECT_TRUE(all_close(head.forward(x, y), ops::arc_margin(head.cosine(x), y, cfg, m), 0, 0));
  head.set_class_margins(Tensor());
  EXPECT_TRUE(all_close(head.forward(x, y), ops::arc_margin(head.cosine(x), y, cfg), 0, 0));
  EXPECT_ERROR_WITH(head.set_margin_scale(-0.1), "nn::ArcMargin", "margin_scale >= 0");
  EXPECT_ERROR_WITH(head.set_margin_scale(10.0), "nn::ArcMargin", "< pi");
  EXPECT_ERROR_WITH(head.set_class_margins(arclight::full({3}, 0.2)), "nn::ArcMargin", "class margins [4]");
  EXPECT_ERROR_WITH(head.set_class_margins(arclight::full({4}, -0.2)), "nn::ArcMargin", ">= 0");
  auto bad = cfg;
  bad.margin = -0.5;
  EXPECT_ERROR_WITH(nn::ArcMargin(8, 4, bad), "nn::ArcMargin", "margin m >= 0");
  EXPECT_ERROR_WITH(nn::dynamic_margins({3, 0}, 0.5, 0.05, 0.25), "dynamic_margins", "counts >= 1");
}

TEST(HeadModules, TrainEvalPropagatesAndStateDictNames) {
  auto net = std::make_shared<nn::Sequential>();
  net->push_back(std::make_shared<nn::GeM>());
  net->push_back(std::make_shared<nn::Linear>(8, 4));
  EXPECT_TRUE((*net)[0]->is_training());
  net->eval();
  EXPECT_FALSE((*net)[0]->is_training());
  EXPECT_FALSE((*net)[1]->is_training());
  net->train();
  EXPECT_TRUE((*net)[1]->is_training());
  std::vector<std::string> names;
  for (auto& [n, t] : net->state_dict()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"0.p", "1.weight", "1.bias"}));
}

// ---- loss module and helpers ----------------------------------------------------------------------

TEST(LossModule, LabelSmoothingCrossEntropy) {
  Tensor w = nn::class_weights_from_counts({48, 12, 3, 100});
  const auto wv = w.to_vector<double>();
  EXPECT_NEAR(std::accumulate(wv.begin(), wv.end(), 0.0), 4.0, 1e-5);
  EXPECT_NEAR(wv[2] / wv[0], std::log1p(48.0) / std::log1p(3.0), 1e-5);  // ∝ 1/log1p(n)
  nn::LabelSmoothingCrossEntropy loss(0.1, ops::Reduction::kMean, w);
  auto sd = loss.state_dict();
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd[0].first, "weight");
  Tensor z = arclight::randn({6, 4});
  Tensor y = labels_from({0, 1, 2, 3, 2, 1});
  EXPECT_TRUE(all_close(loss.forward(z, y), ops::cross_entropy(z, y, {0.1, ops::Reduction::kMean}, w), 0, 0));
  nn::LabelSmoothingCrossEntropy plain(0.0, ops::Reduction::kSum);
  EXPECT_TRUE(plain.state_dict().empty());
  EXPECT_TRUE(all_close(plain.forward(z, y), ops::cross_entropy(z, y, {0.0, ops::Reduction::kSum}), 0, 0));
  EXPECT_ERROR_WITH(nn::LabelSmoothingCrossEntropy(-0.1), "LabelSmoothingCrossEntropy", "label_smoothing in [0, 1]");
  EXPECT_ERROR_WITH(nn::class_weights_from_counts({5, 0}), "class_weights_from_counts", "counts >= 1");
}

}  // namespace
