// Architecture decoding and analytic plans: timm's make_divisible / round_channels, the B0 stage table
// scaled to B1…B7, SE sizes from the block input, drop-path schedule, NFNet β/α bookkeeping, and the
// parameter counts of every registered model against timm's published numbers (efficientnet_b0 exact).
// Plans allocate nothing, so the whole zoo is counted in microseconds; test_model_build.cpp checks that the
// built modules agree with their plans.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "arclight/models/registry.hpp"
#include "harness.hpp"

namespace {

namespace models = arclight::models;

TEST(MakeDivisible, MatchesTimmRounding) {
  EXPECT_EQ(models::make_divisible(32.0), 32);
  EXPECT_EQ(models::make_divisible(35.2), 32);    // 32 * 1.1: nearest multiple, >= 90 %
  EXPECT_EQ(models::make_divisible(38.4), 40);    // 32 * 1.2
  EXPECT_EQ(models::make_divisible(17.6), 16);    // 16 * 1.1
  EXPECT_EQ(models::make_divisible(4.0), 8);      // never below the divisor
  EXPECT_EQ(models::make_divisible(11.0), 16);    // int(11 + 4) // 8 * 8 = 8 < 0.9 * 11 → bumped to 16
  EXPECT_EQ(models::make_divisible(12.0), 16);    // ties round up (int(v + 4))
  EXPECT_EQ(models::make_divisible(19.0, 8, 0, 0.0), 16);  // round_limit 0 (timm's SE): no bump
  EXPECT_EQ(models::round_channels(1280, 1.1), 1408);
  EXPECT_EQ(models::round_channels(1280, 2.0), 2560);
  EXPECT_EQ(models::round_channels(320, 1.4), 448);
  EXPECT_ERROR_WITH(models::make_divisible(0.0), "make_divisible", "v > 0");
}

TEST(EfficientNetDecode, B0MatchesTheStageTable) {
  const auto s = models::decode_efficientnet(*models::efficientnet_config("efficientnet_b0"));
  ASSERT_EQ(s.stages.size(), 7u);
  const std::int64_t repeats[] = {1, 2, 2, 3, 3, 4, 1}, chans[] = {16, 24, 40, 80, 112, 192, 320},
                     kernels[] = {3, 3, 5, 3, 5, 5, 3}, strides[] = {1, 2, 2, 2, 1, 2, 1};
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(std::int64_t(s.stages[i].size()), repeats[i]) << "stage " << i;
    EXPECT_EQ(s.stages[i][0].out_chs, chans[i]);
    EXPECT_EQ(s.stages[i][0].kernel, kernels[i]);
    EXPECT_EQ(s.stages[i][0].stride, strides[i]);
    for (std::size_t j = 1; j < s.stages[i].size(); ++j) EXPECT_EQ(s.stages[i][j].stride, 1);
  }
  EXPECT_EQ(s.stem_chs, 32);
  EXPECT_EQ(s.num_features, 1280);
  EXPECT_EQ(s.num_blocks(), 16);
  // SE from the block input: 0.25 × in_chs, on the expanded (mid) channels.
  const auto& b = s.stages[1][1];  // 24 → 24, mid 144
  EXPECT_EQ(b.mid_chs, 144);
  EXPECT_EQ(b.se_chs, 6);
  EXPECT_TRUE(b.has_skip);
  EXPECT_EQ(s.stages[0][0].se_chs, 8);   // DS block: 0.25 × 32
  EXPECT_FALSE(s.stages[0][0].has_skip);  // 32 → 16
  // Drop-path: rate · index / blocks, 0 for the first block, 0.2 · 15/16 for the last.
  EXPECT_DOUBLE_EQ(s.stages[0][0].drop_path, 0.0);
  EXPECT_DOUBLE_EQ(s.stages[6][0].drop_path, 0.2 * 15.0 / 16.0);
  EXPECT_DOUBLE_EQ(s.drop_rate, 0.2);
}

TEST(EfficientNetDecode, CompoundScalingCeilsDepthAndRoundsWidth) {
  const auto s = models::decode_efficientnet(*models::efficientnet_config("efficientnet_b4"));  // w 1.4, d 1.8
  const std::int64_t repeats[] = {2, 4, 4, 6, 6, 8, 2};  // ceil(r × 1.8)
  const std::int64_t chans[] = {24, 32, 56, 112, 160, 272, 448};
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(std::int64_t(s.stages[i].size()), repeats[i]) << "stage " << i;
    EXPECT_EQ(s.stages[i][0].out_chs, chans[i]) << "stage " << i;
  }
  EXPECT_EQ(s.stem_chs, 48);
  EXPECT_EQ(s.num_features, 1792);
  EXPECT_DOUBLE_EQ(s.drop_rate, 0.4);
  const auto tf = *models::efficientnet_config("tf_efficientnet_b4");
  EXPECT_TRUE(tf.tf_same_padding);
  EXPECT_DOUBLE_EQ(tf.bn_eps, 1e-3);
  EXPECT_FALSE(models::efficientnet_config("efficientnet_b8").has_value());
}

TEST(EfficientNetDecode, OptionsOverrideDefaults) {
  models::ModelOptions o;
  o.drop_rate = 0.5;
  o.drop_path_rate = 0.1;
  o.small_input = true;
  o.in_chans = 1;
  const auto s = models::decode_efficientnet(*models::efficientnet_config("efficientnet_b0"), o);
  EXPECT_DOUBLE_EQ(s.drop_rate, 0.5);
  EXPECT_DOUBLE_EQ(s.stages[6][0].drop_path, 0.1 * 15.0 / 16.0);
  EXPECT_EQ(s.stem_stride, 1);
  const auto plan = models::describe_efficientnet(s, {28, 28});
  EXPECT_EQ(plan.feature_size.h, 2);  // 28 / 16 rounded up
  EXPECT_EQ(plan.params()[0].shape, (arclight::Shape{32, 1, 3, 3}));
  o.drop_rate = 1.0;
  EXPECT_ERROR_WITH(models::decode_efficientnet(*models::efficientnet_config("efficientnet_b0"), o), "drop_rate < 1");
}

TEST(NfNetDecode, F0BlocksFollowTimm) {
  const auto s = models::decode_nfnet(*models::nfnet_config("dm_nfnet_f0"));
  ASSERT_EQ(s.stages.size(), 4u);
  EXPECT_EQ(s.stem_chs, 128);
  EXPECT_EQ(s.num_features, 3072);
  const auto& b0 = s.stages[0][0];
  EXPECT_EQ(b0.in_chs, 128);
  EXPECT_EQ(b0.out_chs, 256);
  EXPECT_EQ(b0.mid_chs, 128);
  EXPECT_EQ(b0.groups, 1);  // 128 / group width 128
  EXPECT_EQ(b0.stride, 1);  // after the stride-4 stem
  EXPECT_TRUE(b0.downsample);
  EXPECT_EQ(b0.attn_chs, 128);  // SE rd_ratio 0.5 of 256
  EXPECT_DOUBLE_EQ(b0.beta, 1.0);
  const auto& s2 = s.stages[2];
  EXPECT_EQ(s2[0].groups, 6);  // 768 / 128
  EXPECT_EQ(s2[0].stride, 2);
  // β: 1/sqrt(expected var): var resets to 1 after each stage's first block and grows by α².
  EXPECT_DOUBLE_EQ(s.stages[1][0].beta, 1.0 / std::sqrt(1.0 + 0.04));
  EXPECT_DOUBLE_EQ(s2[0].beta, 1.0 / std::sqrt(1.0 + 0.04 * 2));  // stage 1 had 2 blocks
  EXPECT_DOUBLE_EQ(s2[3].beta, 1.0 / std::sqrt(1.0 + 0.04 * 3));
  EXPECT_FALSE(s2[3].downsample);
  // Drop path: linspace(0, 0.1, 12).
  EXPECT_DOUBLE_EQ(s.stages[3][2].drop_path, 0.1);
  EXPECT_DOUBLE_EQ(s.stages[0][0].drop_path, 0.0);
  EXPECT_NEAR(models::nf_activation_gamma(arclight::ops::Activation::GELU), 1.7015043497085571, 0);
  const auto eca = models::decode_nfnet(*models::nfnet_config("eca_nfnet_l0"));
  EXPECT_EQ(eca.stages[0][0].attn_chs, 5);  // ECA kernel for 256 channels
  EXPECT_EQ(eca.stages[2][0].groups, 6);    // 384 / 64
}

TEST(ModelPlan, ParameterCountsMatchTimm) {
  // timm, 1000-class classifier. efficientnet_b0 exact; the rest to the published 0.01 M.
  EXPECT_EQ(models::describe_model("efficientnet_b0").num_parameters(), 5288548);
  EXPECT_EQ(models::describe_model("tf_efficientnet_b0").num_parameters(), 5288548);
  const std::map<std::string, double> published_m = {
      {"efficientnet_b1", 7.79},  {"efficientnet_b2", 9.11},  {"efficientnet_b3", 12.23}, {"efficientnet_b4", 19.34},
      {"efficientnet_b5", 30.39}, {"efficientnet_b6", 43.04}, {"efficientnet_b7", 66.35}, {"tf_efficientnet_b7", 66.35},
      {"dm_nfnet_f0", 71.49},     {"dm_nfnet_f1", 132.63},    {"nfnet_l0", 35.07},        {"eca_nfnet_l0", 24.14},
      {"nf_resnet50", 25.56}};
  for (const auto& [name, m] : published_m) {
    const double got = double(models::describe_model(name).num_parameters()) / 1e6;
    EXPECT_NEAR(got, m, 0.005 + 1e-9) << name << ": " << got << " M";
  }
}

TEST(ModelPlan, MacsAreInTheRightPlace) {
  // timm reports efficientnet_b0 at 0.39-0.40 GMACs (224 px) and ResNet-50-sized nets at about 4.1.
  const auto b0 = models::model_info("efficientnet_b0", {}, 224);
  EXPECT_GT(b0.macs, 380'000'000);
  EXPECT_LT(b0.macs, 400'000'000);
  EXPECT_EQ(b0.flops(), 2 * b0.macs);
  const auto r50 = models::model_info("nf_resnet50", {}, 224);
  EXPECT_GT(r50.macs, 4'000'000'000);
  EXPECT_LT(r50.macs, 4'200'000'000);
  // Convolution MACs scale with the pixel count (up to edge rounding).
  const double ratio = double(models::model_info("efficientnet_b0", {}, 448).macs) / double(b0.macs);
  EXPECT_NEAR(ratio, 4.0, 0.02);
}

TEST(Registry, ListsEveryModelWithCounts) {
  const auto all = models::list_models(64);
  ASSERT_EQ(all.size(), models::model_names().size());
  EXPECT_EQ(all.size(), 24u);
  for (const auto& i : all) {
    EXPECT_GT(i.num_parameters, 1'000'000) << i.name;
    EXPECT_GT(i.macs, 0) << i.name;
    EXPECT_EQ(i.resolution, 64);
    EXPECT_TRUE(i.family == "efficientnet" || i.family == "nfnet") << i.name;
  }
  models::ModelOptions o;
  o.num_classes = 0;
  EXPECT_EQ(models::model_info("efficientnet_b0", o).num_parameters, 5288548 - 1280 * 1000 - 1000);
  EXPECT_EQ(models::model_info("efficientnet_b0").default_resolution, 224);
  EXPECT_ERROR_WITH(models::describe_model("resnet9000"), "unknown model 'resnet9000'", "efficientnet_b0");
  EXPECT_ERROR_WITH(models::create_model("resnet9000"), "create_model", "registered models");
}

}  // namespace
