// Forward parity with PyTorch (tests/golden/gen_models.py, committed files in tests/golden/data):
//   * torchvision's EfficientNet (B0 table, width 0.25 / depth 0.5, random init with randomised BN
//     statistics) loaded through models::torchvision_efficientnet_key into our EfficientNet: features and
//     logits agree in float32 within 1e-4 relative to the largest value, and in float64 within 1e-9;
//   * the same weights as a TF port (TF-same padding, BN eps 1e-3) against tf_efficientnet's path;
//   * NFNet paths (dm_nfnet-, nfnet_l0- and nf_resnet-style reduced configs) against a PyTorch reference
//     written from the papers' formulas (scaled WS, γ, α/β, SE/ECA, skipinit, DownsampleAvg).
// Loading is strict, so every parameter and BN buffer name and shape is checked too.
#include <gtest/gtest.h>

#include "arclight/models/registry.hpp"
#include "golden_util.hpp"
#include "harness.hpp"

namespace {

namespace models = arclight::models;
using arclight::DType;
using arclight::Tensor;
using arclight::testing::close_to_max;
using arclight::testing::ModelGolden;

std::shared_ptr<models::EfficientNet> reduced_effnet(bool tf, DType dtype) {
  auto cfg = *models::efficientnet_config(tf ? "tf_efficientnet_b0" : "efficientnet_b0");
  cfg.width_mult = 0.25;
  cfg.depth_mult = 0.5;
  models::ModelOptions o;
  o.num_classes = 10;
  o.dtype = dtype;
  return std::make_shared<models::EfficientNet>(models::decode_efficientnet(cfg, o), o);
}

struct PrecisionCase {
  DType dtype;
  double rtol;
};
const PrecisionCase kPrecisions[] = {{DType::f32, 1e-4}, {DType::f64, 1e-9}};

TEST(EfficientNetGolden, TorchvisionReducedB0) {
  const ModelGolden g(ModelGolden::data_path("models_tv_effnet"));
  for (const auto& pc : kPrecisions) {
    SCOPED_TRACE(arclight::dtype_name(pc.dtype));
    auto m = reduced_effnet(false, pc.dtype);
    const auto r = g.load_into(*m, models::torchvision_efficientnet_key);
    EXPECT_TRUE(r.clean()) << r.summary();
    EXPECT_EQ(r.loaded.size(), m->state_dict().size());
    m->eval();
    arclight::NoGradGuard ng;
    const Tensor x = g.get("input", pc.dtype);
    const Tensor f = m->forward_features(x);
    EXPECT_TRUE(close_to_max(f, g.get("features", DType::f64), pc.rtol));
    EXPECT_TRUE(close_to_max(m->forward_head(f), g.get("logits", DType::f64), pc.rtol));
  }
}

TEST(EfficientNetGolden, TfPortSamePaddingAndEps) {
  const ModelGolden g(ModelGolden::data_path("models_tv_effnet"));
  for (const auto& pc : kPrecisions) {
    SCOPED_TRACE(arclight::dtype_name(pc.dtype));
    auto m = reduced_effnet(true, pc.dtype);
    EXPECT_TRUE(g.load_into(*m, models::torchvision_efficientnet_key).clean());
    m->eval();
    arclight::NoGradGuard ng;
    const Tensor logits = m->forward(g.get("input", pc.dtype));
    EXPECT_TRUE(close_to_max(logits, g.get("logits_tf", DType::f64), pc.rtol));
    // And the TF path really differs from the PyTorch-padding path on these weights.
    EXPECT_FALSE(close_to_max(logits, g.get("logits", DType::f64), 1e-3));
  }
}

// The reduced configs of gen_models.py's NF_CASES (keep in sync).
models::NfConfig nf_case(const std::string& name) {
  models::NfConfig c;
  if (name == "dm") {
    c = *models::nfnet_config("dm_nfnet_f0");
    c.depths = {1, 2, 1, 1};
    c.channels = {32, 48, 64, 64};
    c.stem_chs = 32;
    c.group_size = 8;
    c.num_features = 96;
  } else if (name == "l") {
    c = *models::nfnet_config("eca_nfnet_l0");
    c.depths = {1, 2, 1, 1};
    c.channels = {32, 48, 64, 64};
    c.stem_chs = 32;
    c.group_size = 8;
    c.num_features = 96;
  } else {
    c = *models::nfnet_config("nf_resnet26");
    c.stem_chs = 16;
    c.channels = {32, 64, 64, 128};
    c.depths = {1, 1, 2, 1};
  }
  return c;
}

class NfNetGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(NfNetGolden, MatchesPaperFormulaReference) {
  const std::string name = GetParam();
  const ModelGolden g(ModelGolden::data_path(std::string("models_nf_") + name));
  for (const auto& pc : kPrecisions) {
    SCOPED_TRACE(arclight::dtype_name(pc.dtype));
    models::ModelOptions o;
    o.num_classes = 5;
    o.dtype = pc.dtype;
    models::NormFreeNet m(models::decode_nfnet(nf_case(name), o), o);
    const auto r = g.load_into(m);
    EXPECT_TRUE(r.clean()) << r.summary();
    m.eval();
    arclight::NoGradGuard ng;
    const Tensor f = m.forward_features(g.get("input", pc.dtype));
    EXPECT_TRUE(close_to_max(f, g.get("features", DType::f64), pc.rtol));
    EXPECT_TRUE(close_to_max(m.forward_head(f), g.get("logits", DType::f64), pc.rtol));
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, NfNetGolden, ::testing::Values("dm", "l", "resnet"));

}  // namespace
