// Built modules against their analytic plans (every parameter name and shape, in order, so timm checkpoints
// map one to one), forward shapes in train and eval mode, the options (in_chans, num_classes = 0,
// small_input, drop rates), determinism from a seed, and bad inputs. Full-size models that are cheap to
// build run here (efficientnet_b0, tf_efficientnet_b0); NFNet code paths run on reduced configs of the same
// family (deep-quad and 7×7 stems, SE / ECA, skipinit, γ in the activation, TF-same padding). Every
// registered model is built and run in test_models_slow.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "arclight/models/registry.hpp"
#include "arclight/models/state_dict.hpp"
#include "harness.hpp"

namespace {

namespace models = arclight::models;
using arclight::DType;
using arclight::Generator;
using arclight::Shape;
using arclight::Tensor;

// The module's parameters equal the plan's manifest: same names, same shapes, same order.
void expect_matches_plan(const arclight::nn::Module& m, const models::ModelPlan& plan) {
  const auto params = m.named_parameters();
  ASSERT_EQ(params.size(), plan.params().size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].name, plan.params()[i].name) << "parameter " << i;
    EXPECT_EQ(params[i].tensor.shape(), plan.params()[i].shape) << params[i].name;
  }
  EXPECT_EQ(m.num_parameters(), plan.num_parameters());
}

// A small NFNet config exercising every code path of the family at a fraction of the cost.
models::NfConfig tiny_nf(bool dm, models::NfAttention attn) {
  models::NfConfig c = dm ? *models::nfnet_config("dm_nfnet_f0") : *models::nfnet_config("nfnet_l0");
  c.depths = {1, 2, 2, 1};
  c.channels = {32, 64, 96, 96};
  c.stem_chs = 32;
  c.group_size = 8;
  c.num_features = 128;
  c.attn = attn;
  return c;
}

// EfficientNet-B0's table at width 0.25 / depth 0.5 (every block kind, residuals, SE) — cheap to build.
std::shared_ptr<models::EfficientNet> tiny_effnet(const models::ModelOptions& o, bool tf = false) {
  auto cfg = *models::efficientnet_config(tf ? "tf_efficientnet_b0" : "efficientnet_b0");
  cfg.width_mult = 0.25;
  cfg.depth_mult = 0.5;
  return std::make_shared<models::EfficientNet>(models::decode_efficientnet(cfg, o), o);
}

Tensor image(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, std::uint64_t seed) {
  Generator g(seed);
  return arclight::randn({n, c, h, w}, DType::f32, g);
}

bool all_finite(const Tensor& t) {
  for (double v : t.to_vector<double>())
    if (!std::isfinite(v)) return false;
  return true;
}

TEST(EfficientNetBuild, B0MatchesPlanAndTimmCount) {
  auto m = models::create_model("efficientnet_b0");
  expect_matches_plan(*m, models::describe_model("efficientnet_b0"));
  EXPECT_EQ(m->num_parameters(), 5288548);
  EXPECT_EQ(m->num_features(), 1280);
  EXPECT_EQ(m->feature_stride(), 32);
  // timm key names, spot checks, and BN running statistics in the state_dict.
  std::map<std::string, Shape> sd;
  for (auto& [n, t] : m->state_dict()) sd[n] = t.shape();
  EXPECT_EQ(sd.at("blocks.0.0.se.conv_reduce.weight"), (Shape{8, 32, 1, 1}));
  EXPECT_EQ(sd.at("blocks.1.1.conv_pwl.weight"), (Shape{24, 144, 1, 1}));
  EXPECT_EQ(sd.at("blocks.5.3.conv_dw.weight"), (Shape{1152, 1, 5, 5}));
  EXPECT_EQ(sd.at("bn2.running_var"), (Shape{1280}));
  EXPECT_EQ(sd.at("blocks.6.0.bn3.num_batches_tracked"), (Shape{}));
  EXPECT_EQ(sd.at("classifier.weight"), (Shape{1000, 1280}));
}

TEST(EfficientNetBuild, ForwardShapesTrainAndEval) {
  models::ModelOptions o;
  o.num_classes = 7;
  auto m = tiny_effnet(o);
  EXPECT_EQ(m->num_features(), 320);
  const Tensor x = image(2, 3, 64, 64, 1);
  const Tensor f = m->forward_features(x);
  EXPECT_EQ(f.shape(), (Shape{2, 320, 2, 2}));
  const Tensor y = m->forward(x);
  EXPECT_EQ(y.shape(), (Shape{2, 7}));
  EXPECT_TRUE(all_finite(y));
  m->eval();
  const Tensor ye = m->forward(x);
  EXPECT_EQ(ye.shape(), (Shape{2, 7}));
  EXPECT_TRUE(all_finite(ye));
  // Eval mode has no randomness (no dropout / drop-path, running statistics). Not bit-exact: with 2 OpenMP
  // threads repeated forwards differ in the last bits (kernel-level summation order), hence the tolerance.
  EXPECT_TRUE(arclight::testing::all_close(m->forward(x), ye, 1e-5, 1e-6));
}

TEST(EfficientNetBuild, TfVariantUsesSamePaddingOnOddSizes) {
  models::ModelOptions o;
  o.num_classes = 3;
  auto tf = tiny_effnet(o, true);
  expect_matches_plan(*tf, models::describe_efficientnet(tf->spec(), {45, 45}));
  tf->eval();
  // TF same: every stride-2 layer gives ceil(in / 2): 45 → 23 → 12 → 6 → 3 → 2.
  EXPECT_EQ(tf->forward_features(image(1, 3, 45, 45, 2)).shape(), (Shape{1, 320, 2, 2}));
  EXPECT_EQ(models::describe_efficientnet(tf->spec(), {45, 45}).feature_size.h, 2);
  // (timm's symmetric padding gives the same sizes — they differ in where the pad goes, which the golden
  // test checks against a TF-same PyTorch reference.) The plan and the module agree at another size too.
  EXPECT_EQ(tf->forward_features(image(1, 3, 31, 31, 2)).shape()[2],
            models::describe_efficientnet(tf->spec(), {31, 31}).feature_size.h);
}

TEST(EfficientNetBuild, OptionsGreyInputFeaturesOnlySmallStem) {
  models::ModelOptions o;
  o.in_chans = 1;
  o.num_classes = 0;
  o.small_input = true;
  auto m = tiny_effnet(o);
  expect_matches_plan(*m, models::describe_efficientnet(m->spec(), {28, 28}));
  EXPECT_EQ(m->num_classes(), 0);
  EXPECT_EQ(m->feature_stride(), 16);
  const Tensor x = image(2, 1, 28, 28, 3);
  EXPECT_EQ(m->forward_features(x).shape(), (Shape{2, 320, 2, 2}));
  EXPECT_EQ(m->forward(x).shape(), (Shape{2, 320}));  // pooled features without a classifier
  EXPECT_ERROR_WITH(m->forward(image(2, 3, 28, 28, 3)), "EfficientNet", "expected input [N, 1, H, W]");
}

TEST(EfficientNetBuild, SameSeedSameWeights) {
  Generator g1(42), g2(42), g3(43);
  models::ModelOptions o;
  o.num_classes = 10;
  o.generator = &g1;
  auto a = tiny_effnet(o);
  o.generator = &g2;
  auto b = tiny_effnet(o);
  o.generator = &g3;
  auto c = tiny_effnet(o);
  const auto pa = a->named_parameters(), pb = b->named_parameters(), pc = c->named_parameters();
  EXPECT_TRUE(arclight::testing::all_close(pa[0].tensor, pb[0].tensor, 0, 0));
  EXPECT_TRUE(arclight::testing::all_close(pa.back().tensor, pb.back().tensor, 0, 0));
  EXPECT_FALSE(arclight::testing::all_close(pa[0].tensor, pc[0].tensor, 0, 0));
  // timm's init: conv_head (1×1, 80 → 320) ~ N(0, 2 / 320); BN weight 1, bias 0; classifier U(±1/√10).
  auto rms = [](const Tensor& t) {
    double ss = 0;
    const auto v = t.to_vector<double>();
    for (double x : v) ss += x * x;
    return std::sqrt(ss / double(v.size()));
  };
  const auto& head = pa[pa.size() - 5];
  ASSERT_EQ(head.name, "conv_head.weight");
  EXPECT_NEAR(rms(head.tensor), std::sqrt(2.0 / 320.0), 0.003);
  EXPECT_EQ(pa[1].name, "bn1.weight");
  EXPECT_TRUE(arclight::testing::all_close(pa[1].tensor, arclight::ones({8}), 0, 0));
  EXPECT_NEAR(rms(pa[pa.size() - 2].tensor), 1.0 / std::sqrt(3.0 * 10.0), 0.01);
  EXPECT_TRUE(arclight::testing::all_close(pa.back().tensor, arclight::zeros({10}), 0, 0));
}

TEST(EfficientNetBuild, BackwardReachesEveryParameter) {
  models::ModelOptions o;
  o.num_classes = 4;
  o.drop_rate = 0;
  auto m = tiny_effnet(o);
  arclight::ops::sum(m->forward(image(2, 3, 32, 32, 5))).backward();
  for (const auto& p : m->named_parameters()) EXPECT_TRUE(p.tensor.grad().defined()) << p.name;
}

TEST(NfNetBuild, ReducedConfigsMatchPlansAndRun) {
  struct Case {
    bool dm;
    models::NfAttention attn;
  };
  for (const Case c : {Case{true, models::NfAttention::kSE}, Case{false, models::NfAttention::kSE},
                       Case{false, models::NfAttention::kECA}, Case{false, models::NfAttention::kNone}}) {
    SCOPED_TRACE(::testing::Message() << "dm " << c.dm << " attn " << int(c.attn));
    models::ModelOptions o;
    o.num_classes = 5;
    const auto spec = models::decode_nfnet(tiny_nf(c.dm, c.attn), o);
    models::NormFreeNet m(spec, o);
    expect_matches_plan(m, models::describe_nfnet(spec, {40, 40}));
    const Tensor x = image(2, 3, 40, 40, 7);
    const Tensor f = m.forward_features(x);
    EXPECT_EQ(f.shape(), (Shape{2, 128, 2, 2}));  // 40 / 32 rounded up (same or symmetric padding)
    EXPECT_TRUE(all_finite(f));
    m.eval();
    EXPECT_EQ(m.forward(x).shape(), (Shape{2, 5}));
  }
}

TEST(NfNetBuild, FreshBlocksAreIdentityOnTheirShortcut) {
  // conv3.gain = 0 (no skipinit) / skipinit_gain = 0 (dm): a block without downsample returns its input.
  for (bool dm : {false, true}) {
    models::ModelOptions o;
    o.num_classes = 0;
    const auto spec = models::decode_nfnet(tiny_nf(dm, models::NfAttention::kSE), o);
    models::NormFreeNet m(spec, o);
    m.eval();
    auto& stage1 = dynamic_cast<arclight::nn::Sequential&>(*m.children()[1].second->children()[1].second);
    const Tensor x = image(1, 64, 8, 8, 9);
    EXPECT_TRUE(arclight::testing::all_close(stage1[1]->forward(x), x, 0, 0)) << "dm " << dm;
  }
}

TEST(NfNetBuild, ResNetStemAndSmallInput) {
  models::NfConfig c = *models::nfnet_config("nf_resnet26");
  c.channels = {32, 64, 64, 128};
  c.stem_chs = 16;
  c.depths = {1, 1, 1, 1};
  models::ModelOptions o;
  o.num_classes = 0;
  o.small_input = true;
  o.in_chans = 1;
  const auto spec = models::decode_nfnet(c, o);
  models::NormFreeNet m(spec, o);
  expect_matches_plan(m, models::describe_nfnet(spec, {28, 28}));
  EXPECT_EQ(m.feature_stride(), 16);
  EXPECT_EQ(m.named_parameters()[0].name, "stem.conv.weight");
  EXPECT_EQ(m.named_parameters()[0].tensor.shape(), (Shape{16, 1, 7, 7}));
  const Tensor f = m.forward_features(image(2, 1, 28, 28, 11));
  EXPECT_EQ(f.shape(), (Shape{2, 128, 2, 2}));  // 28 → 28 (stem, stride 1) → 14 (pool) → 14 → 7 → 4 → 2
  EXPECT_TRUE(all_finite(f));
}

}  // namespace

namespace {

TEST(BackboneWeights, ClassifierCheckpointIntoFeatureBackbone) {
  // docs/WEIGHTS.md's recipe: a checkpoint with a classifier loads into a num_classes = 0 backbone
  // non-strictly; exactly the classifier keys are reported, everything else is loaded.
  models::ModelOptions with_head;
  with_head.num_classes = 10;
  auto src = tiny_effnet(with_head);
  models::ModelOptions no_head;
  no_head.num_classes = 0;
  auto dst = tiny_effnet(no_head);
  const auto bytes = models::serialize_state_dict(*src);
  const auto file = arclight::io::SafetensorsFile::from_bytes(bytes, "<ckpt>");
  EXPECT_ERROR_WITH(models::load_state_dict(*dst, file), "'<ckpt>'", "2 unexpected: classifier.bias, classifier.weight");
  const auto r = models::load_state_dict(*dst, file, models::LoadOptions{.strict = false});
  EXPECT_TRUE(r.missing.empty());
  EXPECT_TRUE(r.mismatched.empty());
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"classifier.bias", "classifier.weight"}));
  EXPECT_EQ(r.loaded.size(), dst->state_dict().size());
  src->eval();
  dst->eval();
  const Tensor x = image(2, 3, 32, 32, 13);
  EXPECT_TRUE(arclight::testing::all_close(dst->forward_features(x), src->forward_features(x), 1e-5, 1e-6));
}

}  // namespace
