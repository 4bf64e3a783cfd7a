// The embedding network (METHOD.md §1–4): GeM → Linear(C → 512) → BN1d → PReLU on a backbone's feature map,
// the ArcMargin head; embed() is eval-mode, gradient-free, unit-norm and restores the previous mode;
// the training loss reaches every parameter (backbone, GeM p, neck, head); names are the documented ones.
#include <gtest/gtest.h>

#include <cmath>

#include "arclight/models/embedding_net.hpp"
#include "harness.hpp"

namespace {

namespace models = arclight::models;
using arclight::DType;
using arclight::Generator;
using arclight::Shape;
using arclight::Tensor;

models::EmbeddingNetConfig small_config(std::int64_t classes) {
  models::EmbeddingNetConfig c;
  c.backbone = "efficientnet_b0";
  c.backbone_options.in_chans = 1;
  c.backbone_options.small_input = true;
  c.embedding_dim = 64;
  c.num_classes = classes;
  c.margin.scale = 30.0;
  c.margin.margin = 0.3;
  return c;
}

// The same network on EfficientNet-B0's table at width 0.25 / depth 0.5 (fast to build; 320 features).
std::shared_ptr<models::EmbeddingNet> tiny_net(const models::EmbeddingNetConfig& c) {
  auto ecfg = *models::efficientnet_config("efficientnet_b0");
  ecfg.width_mult = 0.25;
  ecfg.depth_mult = 0.5;
  models::ModelOptions o = c.backbone_options;
  o.num_classes = 0;
  auto backbone = std::make_shared<models::EfficientNet>(models::decode_efficientnet(ecfg, o), o);
  return std::make_shared<models::EmbeddingNet>(c, backbone);
}

Tensor images(std::int64_t n, std::uint64_t seed) {
  Generator g(seed);
  return arclight::rand({n, 1, 28, 28}, DType::f32, g);
}

TEST(EmbeddingNet, StructureAndNames) {
  models::EmbeddingNet net(small_config(10));
  std::map<std::string, Shape> sd;
  for (auto& [n, t] : net.state_dict()) sd[n] = t.shape();
  EXPECT_EQ(sd.at("pool.p"), (Shape{1}));
  EXPECT_EQ(sd.at("fc.weight"), (Shape{64, 1280}));
  EXPECT_EQ(sd.at("fc.bias"), (Shape{64}));
  EXPECT_EQ(sd.at("bn.running_mean"), (Shape{64}));
  EXPECT_EQ(sd.at("act.weight"), (Shape{1}));
  EXPECT_EQ(sd.at("head.weight"), (Shape{10, 64}));
  EXPECT_EQ(sd.at("backbone.conv_stem.weight"), (Shape{32, 1, 3, 3}));
  EXPECT_EQ(sd.count("backbone.classifier.weight"), 0u);  // backbone built without classifier
  EXPECT_EQ(net.backbone()->num_classes(), 0);
  EXPECT_DOUBLE_EQ(net.pool()->p(), 3.0);
}

TEST(EmbeddingNet, EmbedIsUnitNormEvalAndRestoresMode) {
  auto net_ptr = tiny_net(small_config(10));
  auto& net = *net_ptr;
  const Tensor x = images(3, 1);
  ASSERT_TRUE(net.is_training());
  const Tensor e = net.embed(x);
  EXPECT_EQ(e.shape(), (Shape{3, 64}));
  EXPECT_FALSE(e.requires_grad());
  const auto v = e.to_vector<double>();
  for (int i = 0; i < 3; ++i) {
    double ss = 0;
    for (int j = 0; j < 64; ++j) ss += v[i * 64 + j] * v[i * 64 + j];
    EXPECT_NEAR(ss, 1.0, 1e-5) << "row " << i;
  }
  EXPECT_TRUE(net.is_training());
  EXPECT_TRUE(net.backbone()->is_training());
  // Eval-mode embedding of one image does not depend on the rest of the batch (running statistics).
  const Tensor e0 = net.embed(arclight::ops::narrow(x, 0, 0, 1));
  EXPECT_TRUE(arclight::testing::all_close(e0, arclight::ops::narrow(e, 0, 0, 1), 1e-4, 1e-5));
  net.eval();
  net.embed(x);
  EXPECT_FALSE(net.is_training());
}

TEST(EmbeddingNet, LossTrainsEveryParameter) {
  auto cfg = small_config(5);
  cfg.backbone_options.drop_rate = 0;
  auto net_ptr = tiny_net(cfg);
  auto& net = *net_ptr;
  const Tensor x = images(4, 2);
  const Tensor labels = arclight::from_vector(std::vector<std::int64_t>{0, 3, 4, 3}, {4});
  const Tensor loss = net.loss(x, labels);
  EXPECT_EQ(loss.numel(), 1);
  EXPECT_TRUE(std::isfinite(loss.item()));
  EXPECT_GT(loss.item(), 0.0);
  loss.backward();
  for (const auto& p : net.named_parameters()) EXPECT_TRUE(p.tensor.grad().defined()) << p.name;
  const Tensor logits = net.logits(x, labels);
  EXPECT_EQ(logits.shape(), (Shape{4, 5}));
  const auto c = net.cosine(x).to_vector<double>();
  for (double v : c) EXPECT_LE(std::abs(v), 1.0 + 1e-6);
}

TEST(EmbeddingNet, WithoutHeadOrPrelu) {
  auto cfg = small_config(0);
  cfg.prelu = false;
  auto net_ptr = tiny_net(cfg);
  auto& net = *net_ptr;
  EXPECT_FALSE(net.has_head());
  for (auto& [n, t] : net.state_dict()) EXPECT_TRUE(n != "act.weight" && n.rfind("head.", 0) != 0) << n;
  EXPECT_EQ(net.forward(images(2, 3)).shape(), (Shape{2, 64}));
  const Tensor labels = arclight::from_vector(std::vector<std::int64_t>{0, 1}, {2});
  EXPECT_ERROR_WITH(net.loss(images(2, 3), labels), "EmbeddingNet", "no ArcMargin head");
  cfg.backbone = "vgg16";
  EXPECT_ERROR_WITH(models::EmbeddingNet bad(cfg), "unknown model 'vgg16'");
}

}  // namespace
