// Golden parity of the conv-block layers with PyTorch 1.13: tests/golden/gen_conv.py computed the references
// (float64, from float32 inputs) and committed them as tests/golden/data/conv_*.safetensors, read here with
// io::SafetensorsFile. Every case runs in float64 (tight tolerances: only rounding differs) and in float32
// (rtol 1e-4 plus an absolute floor of 1e-5 × the tensor's largest value, for entries that are small
// differences of large terms). Covered: conv2d in every variant (groups, depthwise with multiplier, stride,
// dilation, 1x1, TF-same), ScaledStdConv2d (timm's formula), BatchNorm2d/1d through 3 train steps (outputs,
// gradients, running statistics, counter) and eval, ReLU/SiLU/GELU/Sigmoid/PReLU, avg/max/adaptive pooling,
// SqueezeExcite and ECA — through the ops and through the nn modules.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "arclight/io/safetensors.hpp"
#include "golden_util.hpp"
#include "layers_util.hpp"

namespace {

using arclight::DType;
using arclight::Tensor;
namespace ops = arclight::ops;
namespace nn = arclight::nn;
namespace io = arclight::io;

using Golden = arclight::testing::GoldenFile;
using arclight::testing::close;

struct Precision {
  DType dt;
  double rtol, atol_rel;
  const char* name;
};
const Precision kPrecisions[] = {{DType::f64, 1e-10, 1e-12, "f64"}, {DType::f32, 1e-4, 1e-5, "f32"}};

#define EXPECT_GOLDEN(actual, file, key, prec) \
  EXPECT_TRUE(close(actual, (file).get(key), (prec).rtol, (prec).atol_rel)) << (key) << " [" << (prec).name << "]"

// Copies stored values into a module parameter (in place, so the module uses them).
void load_into(const Tensor& param, const Tensor& values) {
  arclight::NoGradGuard ng;
  Tensor p = param;
  ops::copy_(p, values);
}

TEST(LayersGolden, Conv2dEveryVariant) {
  Golden g("conv_conv2d");
  const std::vector<std::string> cases{"k3_pad1_bias",   "k3_s2_nobias", "k3_dilation2",     "k3_groups2",
                                       "dw_k3",          "dw_k5_s2_mult2", "pw_1x1",          "pw_1x1_groups4",
                                       "pw_1x1_s2",      "same_k3_s2_odd", "same_k3_s2_even", "same_dw_k5_s2",
                                       "same_k3_s1_dil2"};
  for (const auto& pr : kPrecisions) {
    for (const auto& c : cases) {
      SCOPED_TRACE(c);
      const auto p = g.ints(c + ".params");  // stride, pads t/b/l/r, dilation, groups, same
      ops::Conv2dParams params = p[7] ? ops::conv2d_params_same(p[0], p[5], p[6]) : ops::conv2d_params(p[0], 0, p[5], p[6]);
      if (!p[7]) params.pad_top = p[1], params.pad_bottom = p[2], params.pad_left = p[3], params.pad_right = p[4];
      const Tensor x = g.leaf(c + ".x", pr.dt), w = g.leaf(c + ".w", pr.dt);
      const Tensor b = g.has(c + ".b") ? g.leaf(c + ".b", pr.dt) : Tensor();
      const Tensor y = ops::conv2d(x, w, b, params);
      EXPECT_EQ(y.dtype(), pr.dt);
      EXPECT_GOLDEN(y, g, c + ".y", pr);
      y.backward(g.get(c + ".gy", pr.dt));
      EXPECT_GOLDEN(x.grad(), g, c + ".gx", pr);
      EXPECT_GOLDEN(w.grad(), g, c + ".gw", pr);
      if (b.defined()) EXPECT_GOLDEN(b.grad(), g, c + ".gb", pr);
    }
  }
}

TEST(LayersGolden, Conv2dModuleWithSamePaddingMatchesTheTfSameCase) {
  Golden g("conv_conv2d");
  nn::Conv2d conv(6, 6, 5, 2, nn::Padding::same(), 1, 6, true, arclight::default_generator(), DType::f64);
  load_into(conv.weight(), g.get("same_dw_k5_s2.w"));
  load_into(conv.bias(), g.get("same_dw_k5_s2.b"));
  const Tensor y = conv.forward(g.get("same_dw_k5_s2.x", DType::f64));
  EXPECT_TRUE(close(y, g.get("same_dw_k5_s2.y"), 1e-10, 1e-12));
  y.backward(g.get("same_dw_k5_s2.gy", DType::f64));
  EXPECT_TRUE(close(conv.weight().grad(), g.get("same_dw_k5_s2.gw"), 1e-10, 1e-12));
  EXPECT_TRUE(close(conv.bias().grad(), g.get("same_dw_k5_s2.gb"), 1e-10, 1e-12));
}

TEST(LayersGolden, ScaledStdConv2dIsTimms) {
  Golden g("conv_ws");
  for (const auto& pr : kPrecisions) {
    for (std::string c : {"nfnet_gelu_k3", "grouped_s2", "pw_1x1"}) {
      SCOPED_TRACE(c);
      const auto p = g.ints(c + ".params");  // stride, padding, groups
      const Tensor w = g.get(c + ".w");
      const double gamma = g.doubles(c + ".gamma")[0], eps = g.doubles(c + ".eps")[0];
      nn::ScaledStdConv2d conv(w.shape()[1] * p[2], w.shape()[0], w.shape()[2], p[0], p[1], 1, p[2], true, gamma, eps,
                               1.0, arclight::default_generator(), pr.dt);
      load_into(conv.weight(), w);
      load_into(conv.gain(), g.get(c + ".gain"));
      load_into(conv.bias(), g.get(c + ".b"));
      EXPECT_GOLDEN(conv.standardized_weight(), g, c + ".w_hat", pr);
      const Tensor x = g.leaf(c + ".x", pr.dt);
      const Tensor y = conv.forward(x);
      EXPECT_GOLDEN(y, g, c + ".y", pr);
      y.backward(g.get(c + ".gy", pr.dt));
      EXPECT_GOLDEN(x.grad(), g, c + ".gx", pr);
      EXPECT_GOLDEN(conv.weight().grad(), g, c + ".gw", pr);
      EXPECT_GOLDEN(conv.gain().grad(), g, c + ".ggain", pr);
      EXPECT_GOLDEN(conv.bias().grad(), g, c + ".gb", pr);
    }
  }
}

template <typename BN>
void check_batch_norm(const Golden& g, const std::string& prefix, const Precision& pr) {
  SCOPED_TRACE(prefix);
  const auto cfg = g.doubles(prefix + ".config");  // eps, momentum
  const Tensor w0 = g.get(prefix + ".weight");
  BN bn(w0.numel(), cfg[0], cfg[1], true, true, pr.dt);
  load_into(bn.weight(), w0);
  load_into(bn.bias(), g.get(prefix + ".bias"));
  bn.train();
  for (int step = 0; step < 3; ++step) {
    const std::string s = prefix + ".train" + std::to_string(step);
    bn.zero_grad();
    const Tensor x = g.leaf(s + ".x", pr.dt);
    const Tensor y = bn.forward(x);
    EXPECT_GOLDEN(y, g, s + ".y", pr);
    y.backward(g.get(s + ".gy", pr.dt));
    EXPECT_GOLDEN(x.grad(), g, s + ".gx", pr);
    EXPECT_GOLDEN(bn.weight().grad(), g, s + ".gw", pr);
    EXPECT_GOLDEN(bn.bias().grad(), g, s + ".gb", pr);
    EXPECT_GOLDEN(bn.running_mean(), g, s + ".running_mean", pr);
    EXPECT_GOLDEN(bn.running_var(), g, s + ".running_var", pr);
  }
  EXPECT_EQ(bn.num_batches_tracked(), g.get(prefix + ".num_batches_tracked").item<std::int64_t>());
  EXPECT_EQ(bn.num_batches_tracked(), 3);
  bn.eval();
  bn.zero_grad();
  const Tensor x = g.leaf(prefix + ".eval.x", pr.dt);
  const Tensor y = bn.forward(x);
  EXPECT_GOLDEN(y, g, prefix + ".eval.y", pr);
  y.backward(g.get(prefix + ".eval.gy", pr.dt));
  EXPECT_GOLDEN(x.grad(), g, prefix + ".eval.gx", pr);
  EXPECT_GOLDEN(bn.weight().grad(), g, prefix + ".eval.gw", pr);
  EXPECT_GOLDEN(bn.bias().grad(), g, prefix + ".eval.gb", pr);
}

TEST(LayersGolden, BatchNormThreeTrainStepsThenEval) {
  Golden g("conv_bn");
  for (const auto& pr : kPrecisions) {
    check_batch_norm<nn::BatchNorm2d>(g, "bn2d", pr);
    check_batch_norm<nn::BatchNorm1d>(g, "bn1d_tf", pr);
  }
}

TEST(LayersGolden, Activations) {
  Golden g("conv_act");
  for (const auto& pr : kPrecisions) {
    for (auto [name, act] : {std::pair{"relu", ops::Activation::ReLU}, std::pair{"silu", ops::Activation::SiLU},
                             std::pair{"gelu", ops::Activation::GELU}, std::pair{"sigmoid", ops::Activation::Sigmoid}}) {
      const std::string n = name;
      const Tensor x = g.leaf("x", pr.dt);
      const Tensor y = nn::make_activation(act)->forward(x);
      EXPECT_GOLDEN(y, g, n + ".y", pr);
      y.backward(g.get("gy", pr.dt));
      EXPECT_GOLDEN(x.grad(), g, n + ".gx", pr);
    }
    for (std::string n : {"prelu1", "prelu4"}) {
      const Tensor x = g.leaf("x", pr.dt), w = g.get(n + ".w", pr.dt);
      nn::PReLU m(w.numel(), 0.0, pr.dt);
      load_into(m.weight(), w);
      const Tensor y = m.forward(x);
      EXPECT_GOLDEN(y, g, n + ".y", pr);
      y.backward(g.get("gy", pr.dt));
      EXPECT_GOLDEN(x.grad(), g, n + ".gx", pr);
      EXPECT_GOLDEN(m.weight().grad(), g, n + ".gw", pr);
    }
  }
}

TEST(LayersGolden, Pooling) {
  Golden g("conv_pool");
  for (const auto& pr : kPrecisions) {
    for (std::string c : {"avg_k3s2p1_ceil_incl", "avg_k3s2p1_ceil_excl", "avg_nfnet_k2s2_odd", "avg_k2s1",
                          "max_k3s2p1", "max_k2_ceil", "adaptive_1"}) {
      SCOPED_TRACE(c);
      const auto p = g.ints(c + ".params");  // kind, k, stride, pad, ceil_mode, count_include_pad
      const Tensor x = g.leaf(c + ".x", pr.dt);
      Tensor y;
      if (p[0] == 0) y = nn::AvgPool2d(p[1], p[2], p[3], p[4] != 0, p[5] != 0).forward(x);
      else if (p[0] == 1) y = nn::MaxPool2d(p[1], p[2], p[3], p[4] != 0).forward(x);
      else y = nn::AdaptiveAvgPool2d(1).forward(x);
      EXPECT_GOLDEN(y, g, c + ".y", pr);
      y.backward(g.get(c + ".gy", pr.dt));
      EXPECT_GOLDEN(x.grad(), g, c + ".gx", pr);
    }
  }
}

TEST(LayersGolden, SqueezeExciteAndEca) {
  Golden g("conv_se");
  for (const auto& pr : kPrecisions) {
    nn::SqueezeExcite se(8, 2, ops::Activation::SiLU, arclight::default_generator(), pr.dt);
    for (const auto& p : se.named_parameters()) load_into(p.tensor, g.get("se." + p.name));
    Tensor x = g.leaf("se.x", pr.dt);
    Tensor y = se.forward(x);
    EXPECT_GOLDEN(y, g, "se.y", pr);
    y.backward(g.get("se.gy", pr.dt));
    EXPECT_GOLDEN(x.grad(), g, "se.gx", pr);
    for (const auto& p : se.named_parameters()) EXPECT_GOLDEN(p.tensor.grad(), g, "se.g_" + p.name, pr);

    nn::EcaModule eca(256, 3, 2.0, 1.0, arclight::default_generator(), pr.dt);
    ASSERT_EQ(eca.kernel_size(), 5);
    load_into(eca.conv()->weight(), g.get("eca.conv.weight"));
    x = g.leaf("eca.x", pr.dt);
    y = eca.forward(x);
    EXPECT_GOLDEN(y, g, "eca.y", pr);
    y.backward(g.get("eca.gy", pr.dt));
    EXPECT_GOLDEN(x.grad(), g, "eca.gx", pr);
    EXPECT_GOLDEN(eca.conv()->weight().grad(), g, "eca.g_conv.weight", pr);
  }
}

}  // namespace
