// load_state_dict / save_state_dict: round trip through a safetensors file (parameters and BN running
// statistics), strict mode listing missing / unexpected / mismatched keys and leaving the module untouched,
// non-strict mode loading what matches and reporting the rest, dtype conversion (F64 / F16 / BF16 into f32),
// key maps, and torchvision's EfficientNet key names.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "arclight/models/state_dict.hpp"
#include "arclight/nn/batch_norm.hpp"
#include "arclight/nn/conv.hpp"
#include "arclight/nn/linear.hpp"
#include "harness.hpp"

namespace {

namespace models = arclight::models;
namespace nn = arclight::nn;
namespace io = arclight::io;
using arclight::DType;
using arclight::Generator;
using arclight::Shape;
using arclight::Tensor;

// conv(3→4, 3×3) → bn(4) → fc(4→2): parameters, BN buffers and a 0-d i64 counter.
class Tiny : public nn::Module {
 public:
  explicit Tiny(std::uint64_t seed, std::int64_t fc_out = 2) : nn::Module("Tiny") {
    Generator g(seed);
    conv = register_module("conv", std::make_shared<nn::Conv2d>(3, 4, 3, 1, 1, 1, 1, true, g));
    bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(4));
    fc = register_module("fc", std::make_shared<nn::Linear>(4, fc_out, true, g));
  }
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
  std::shared_ptr<nn::Linear> fc;
};

std::map<std::string, std::vector<double>> values(const nn::Module& m) {
  std::map<std::string, std::vector<double>> out;
  for (auto& [n, t] : m.state_dict()) out[n] = t.to_vector<double>();
  return out;
}

// Runs one training-mode BN forward so the running statistics move away from 0 / 1.
void touch_bn(Tiny& t) {
  Generator g(3);
  t.bn->forward(arclight::randn({4, 4, 5, 5}, DType::f32, g, 0.5, 2.0));
}

std::filesystem::path temp_file(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / "arclight_models_test";
  std::filesystem::create_directories(dir);
  return dir / name;
}

TEST(StateDict, SaveLoadRoundTripIncludesRunningStats) {
  Tiny a(1), b(2);
  touch_bn(a);
  EXPECT_EQ(a.bn->num_batches_tracked(), 1);
  const auto path = temp_file("tiny.safetensors");
  models::save_state_dict(a, path, {{"format", "arclight"}});
  const auto f = io::SafetensorsFile::open(path);
  EXPECT_EQ(f.size(), a.state_dict().size());
  EXPECT_EQ(f.metadata().at("format"), "arclight");
  EXPECT_EQ(f.at("bn.num_batches_tracked").dtype, DType::i64);
  ASSERT_NE(values(a), values(b));
  const auto r = models::load_state_dict(b, path);
  EXPECT_TRUE(r.clean()) << r.summary();
  EXPECT_EQ(r.loaded.size(), a.state_dict().size());
  EXPECT_EQ(values(a), values(b));  // bit-exact, running_mean/var and the counter included
  EXPECT_EQ(b.bn->num_batches_tracked(), 1);
  // Loaded parameters are still leaves that train.
  EXPECT_TRUE(b.conv->weight().requires_grad());
  EXPECT_TRUE(b.conv->weight().is_leaf());
}

TEST(StateDict, StrictListsEveryProblemAndChangesNothing) {
  Tiny a(1), b(2, /*fc_out=*/3);  // fc shapes differ
  auto bytes = models::serialize_state_dict(a);
  // Drop conv.bias from the file and add an extra key: rebuild the file from views.
  auto file = io::SafetensorsFile::from_bytes(bytes);
  std::vector<io::TensorBytes> ts;
  for (const auto& t : file.tensors())
    if (t.name != "conv.bias") ts.push_back(t);
  const float extra_v[2] = {1.f, 2.f};
  ts.push_back({"extra.weight", DType::f32, {2}, std::span(reinterpret_cast<const std::uint8_t*>(extra_v), 8)});
  const auto before = values(b);
  EXPECT_ERROR_WITH(models::load_state_dict(b, std::span<const io::TensorBytes>(ts)), "load_state_dict", "strict",
                    "1 missing: conv.bias", "1 unexpected: extra.weight", "2 mismatched",
                    "fc.weight (expected f32 [3, 4], found F32 [2, 4])", "module left unchanged");
  EXPECT_EQ(values(b), before);
  // Non-strict: loads everything that matches and reports the rest.
  models::LoadOptions lo;
  lo.strict = false;
  const auto r = models::load_state_dict(b, std::span<const io::TensorBytes>(ts), lo);
  EXPECT_EQ(r.missing, (std::vector<std::string>{"conv.bias"}));
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"extra.weight"}));
  ASSERT_EQ(r.mismatched.size(), 2u);
  EXPECT_EQ(r.mismatched[0].name, "fc.weight");
  EXPECT_EQ(r.mismatched[1].name, "fc.bias");
  const auto after = values(b), ref = values(a);
  EXPECT_EQ(after.at("conv.weight"), ref.at("conv.weight"));
  EXPECT_EQ(after.at("bn.running_var"), ref.at("bn.running_var"));
  EXPECT_EQ(after.at("conv.bias"), before.at("conv.bias"));
  EXPECT_EQ(after.at("fc.weight"), before.at("fc.weight"));
  EXPECT_FALSE(r.clean());
}

TEST(StateDict, ConvertsFloatTypesAndRejectsFloatIntoInteger) {
  Tiny t(1);
  // conv.weight stored as F64, bn.weight as F16, bn.bias as BF16, the rest missing (non-strict).
  std::vector<double> w64(4 * 3 * 3 * 3);
  for (std::size_t i = 0; i < w64.size(); ++i) w64[i] = 0.01 * double(i) - 0.5;
  const std::uint16_t h16[4] = {0x3c00, 0xc000, 0x3800, 0x0001};  // 1, -2, 0.5, smallest subnormal
  const std::uint16_t b16[4] = {0x3f80, 0xbf80, 0x4040, 0x0000};  // 1, -1, 3, 0
  const float nbt = 5.f;
  std::vector<io::TensorBytes> ts = {
      {"conv.weight", DType::f64, {4, 3, 3, 3}, std::span(reinterpret_cast<const std::uint8_t*>(w64.data()), w64.size() * 8)},
      {"bn.weight", DType::f16, {4}, std::span(reinterpret_cast<const std::uint8_t*>(h16), 8)},
      {"bn.bias", DType::bf16, {4}, std::span(reinterpret_cast<const std::uint8_t*>(b16), 8)},
      {"bn.num_batches_tracked", DType::f32, {}, std::span(reinterpret_cast<const std::uint8_t*>(&nbt), 4)}};
  models::LoadOptions lo;
  lo.strict = false;
  const auto r = models::load_state_dict(t, std::span<const io::TensorBytes>(ts), lo);
  ASSERT_EQ(r.mismatched.size(), 1u);
  EXPECT_EQ(r.mismatched[0].name, "bn.num_batches_tracked");
  EXPECT_EQ(r.mismatched[0].expected, "i64 []");
  const auto cw = t.conv->weight().to_vector<double>();
  for (std::size_t i = 0; i < cw.size(); ++i) EXPECT_FLOAT_EQ(float(cw[i]), float(w64[i]));
  EXPECT_EQ(t.bn->weight().to_vector<double>(), (std::vector<double>{1, -2, 0.5, std::ldexp(1.0, -24)}));
  EXPECT_EQ(t.bn->bias().to_vector<double>(), (std::vector<double>{1, -1, 3, 0}));
}

TEST(StateDict, KeyMapRenamesAndDrops) {
  Tiny a(1), b(2);
  const auto file = io::SafetensorsFile::from_bytes(models::serialize_state_dict(a), "<a>");
  std::vector<io::TensorBytes> renamed;
  std::vector<std::string> names;
  for (const auto& t : file.tensors()) names.push_back("model." + t.name);
  for (std::size_t i = 0; i < file.tensors().size(); ++i) {
    auto t = file.tensors()[i];
    t.name = names[i];
    renamed.push_back(t);
  }
  models::LoadOptions lo;
  lo.key_map = [](const std::string& k) -> std::optional<std::string> {
    if (k.rfind("model.", 0) != 0) return std::nullopt;
    return k.substr(6);
  };
  EXPECT_TRUE(models::load_state_dict(b, std::span<const io::TensorBytes>(renamed), lo).clean());
  EXPECT_EQ(values(a), values(b));
  // Two file keys landing on one name is an error, not a silent overwrite.
  lo.key_map = [](const std::string& k) -> std::optional<std::string> {
    return k == "model.fc.bias" ? std::optional<std::string>("conv.bias") : std::optional<std::string>(k.substr(6));
  };
  EXPECT_ERROR_WITH(models::load_state_dict(b, std::span<const io::TensorBytes>(renamed), lo), "a second file tensor",
                    "1 missing: fc.bias");
}

TEST(StateDict, ErrorsNameTheFile) {
  Tiny a(1);
  const auto path = temp_file("not_there.safetensors");
  std::filesystem::remove(path);
  EXPECT_ERROR_WITH(models::load_state_dict(a, path), "not_there.safetensors");
  Tiny b(1, 3);
  const auto p2 = temp_file("tiny_for_mismatch.safetensors");
  models::save_state_dict(b, p2);
  EXPECT_ERROR_WITH(models::load_state_dict(a, p2), "tiny_for_mismatch.safetensors", "fc.weight");
}

TEST(StateDict, TorchvisionEfficientNetKeys) {
  const std::map<std::string, std::string> cases = {
      {"features.0.0.weight", "conv_stem.weight"},
      {"features.0.1.running_mean", "bn1.running_mean"},
      {"features.1.0.block.0.0.weight", "blocks.0.0.conv_dw.weight"},
      {"features.1.0.block.0.1.bias", "blocks.0.0.bn1.bias"},
      {"features.1.0.block.1.fc1.weight", "blocks.0.0.se.conv_reduce.weight"},
      {"features.1.0.block.2.0.weight", "blocks.0.0.conv_pw.weight"},
      {"features.1.0.block.2.1.num_batches_tracked", "blocks.0.0.bn2.num_batches_tracked"},
      {"features.2.1.block.0.0.weight", "blocks.1.1.conv_pw.weight"},
      {"features.2.1.block.1.1.weight", "blocks.1.1.bn2.weight"},
      {"features.6.3.block.2.fc2.bias", "blocks.5.3.se.conv_expand.bias"},
      {"features.7.0.block.3.0.weight", "blocks.6.0.conv_pwl.weight"},
      {"features.7.0.block.3.1.running_var", "blocks.6.0.bn3.running_var"},
      {"features.8.0.weight", "conv_head.weight"},
      {"features.8.1.weight", "bn2.weight"},
      {"classifier.1.weight", "classifier.weight"}};
  for (const auto& [tv, timm] : cases) EXPECT_EQ(models::torchvision_efficientnet_key(tv).value_or("<none>"), timm) << tv;
  for (const char* bad : {"features.x.0.weight", "head.fc.weight", "features.2.0.block.9.0.weight", "features.1.0.block.1.0.weight"})
    EXPECT_FALSE(models::torchvision_efficientnet_key(bad).has_value()) << bad;
}

}  // namespace
