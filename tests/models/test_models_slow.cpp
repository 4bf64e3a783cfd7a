// `slow`: every registered model is built at full size (random init), its parameters checked against the
// analytic plan (names, shapes, count) and run forward at a small resolution in eval mode; and the full-size
// efficientnet_b0 parity with torchvision when its export exists (tests/golden/gen_models.py --full-b0 PATH;
// looked up at $ARCLIGHT_FULL_B0_GOLDEN, else <source>/build-models/golden/efficientnet_b0_full.safetensors,
// else skipped with a message saying how to create it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "arclight/models/registry.hpp"
#include "golden_util.hpp"
#include "harness.hpp"

namespace {

namespace models = arclight::models;
using arclight::DType;
using arclight::Shape;
using arclight::Tensor;

class EveryModel : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryModel, BuildsMatchesPlanAndRuns) {
  const std::string name = GetParam();
  models::ModelOptions o;  // 1000 classes: the count timm publishes
  auto m = models::create_model(name, o);
  const auto plan = models::describe_model(name, o, 64, 64);
  const auto params = m->named_parameters();
  ASSERT_EQ(params.size(), plan.params().size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    ASSERT_EQ(params[i].name, plan.params()[i].name);
    ASSERT_EQ(params[i].tensor.shape(), plan.params()[i].shape) << params[i].name;
  }
  EXPECT_EQ(m->num_parameters(), plan.num_parameters());
  m->eval();
  arclight::NoGradGuard ng;
  arclight::Generator g(1);
  const Tensor x = arclight::randn({2, 3, 64, 64}, DType::f32, g);
  const Tensor f = m->forward_features(x);
  EXPECT_EQ(f.shape(), (Shape{2, plan.num_features, plan.feature_size.h, plan.feature_size.w}));
  const Tensor y = m->forward_head(f);
  EXPECT_EQ(y.shape(), (Shape{2, 1000}));
  for (double v : y.to_vector<double>()) ASSERT_TRUE(std::isfinite(v)) << name;
}

INSTANTIATE_TEST_SUITE_P(Zoo, EveryModel, ::testing::ValuesIn(models::model_names()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(FullEfficientNetB0, MatchesTorchvision) {
  std::string path = std::string(ARCLIGHT_SOURCE_DIR) + "/build-models/golden/efficientnet_b0_full.safetensors";
  if (const char* env = std::getenv("ARCLIGHT_FULL_B0_GOLDEN")) path = env;
  if (!std::filesystem::exists(path))
    GTEST_SKIP() << "no full-size export at " << path
                 << "; create it with: /usr/bin/python3 tests/golden/gen_models.py --full-b0 " << path;
  const arclight::testing::ModelGolden g(path);
  auto m = models::create_model("efficientnet_b0");
  const auto r = g.load_into(*m, models::torchvision_efficientnet_key);
  ASSERT_TRUE(r.clean()) << r.summary();
  m->eval();
  arclight::NoGradGuard ng;
  const Tensor logits = m->forward(g.get("input", DType::f32));
  EXPECT_TRUE(arclight::testing::close_to_max(logits, g.get("logits", DType::f64), 1e-4));
}

}  // namespace
