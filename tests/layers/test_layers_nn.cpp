// Unit tests of the conv-block modules (include/arclight/nn/{conv, batch_norm, activation, attention,
// dropout, pooling}.hpp): state_dict names and shapes (timm/PyTorch keys), initialisation bounds, padding
// modes, train()/eval() behaviour (BN statistics, dropout, drop path), BN running statistics after 3 steps,
// the SE/ECA computations against their compositions, and bad constructor/forward arguments.
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "layers_util.hpp"

namespace {

using arclight::DType;
using arclight::Generator;
using arclight::Shape;
using arclight::Tensor;
namespace nn = arclight::nn;
namespace ops = arclight::ops;
using arclight::layers_test::uniform;
using arclight::testing::all_close;

std::map<std::string, Shape> shapes_of(const nn::Module& m) {
  std::map<std::string, Shape> out;
  for (const auto& [name, t] : m.state_dict()) out[name] = t.shape();
  return out;
}

std::vector<std::string> names_of(const nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [name, t] : m.state_dict()) out.push_back(name);
  return out;
}

// ---- convolutions ------------------------------------------------------------------------------------

TEST(ConvModules, Conv2dStateDictInitAndForward) {
  Generator gen(1);
  nn::Conv2d conv(4, 6, 3, 2, 1, 1, 2, true, gen);
  EXPECT_EQ(names_of(conv), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_EQ(conv.weight().shape(), (Shape{6, 2, 3, 3}));
  EXPECT_EQ(conv.bias().shape(), (Shape{6}));
  // torch's default init: U(±1/√fan_in), fan_in = 2·3·3; and not degenerate
  const double bound = 1.0 / std::sqrt(18.0);
  double max_abs = 0;
  for (double v : conv.weight().to_vector<double>()) max_abs = std::max(max_abs, std::abs(v));
  EXPECT_LE(max_abs, bound);
  EXPECT_GT(max_abs, 0.5 * bound);
  for (double v : conv.bias().to_vector<double>()) EXPECT_LE(std::abs(v), bound);
  EXPECT_TRUE(conv.named_parameters()[1].no_weight_decay);
  EXPECT_FALSE(conv.named_parameters()[0].no_weight_decay);

  const Tensor x = uniform({2, 4, 7, 7}, 2, -1, 1, DType::f32);
  const Tensor y = conv.forward(x);
  EXPECT_EQ(y.shape(), (Shape{2, 6, 4, 4}));
  EXPECT_TRUE(all_close(y, ops::conv2d(x, conv.weight(), conv.bias(), ops::conv2d_params(2, 1, 1, 2)), 0, 0));

  nn::Conv2d no_bias(3, 5, 1, 1, 0, 1, 1, false, gen);
  EXPECT_EQ(names_of(no_bias), (std::vector<std::string>{"weight"}));
  EXPECT_FALSE(no_bias.bias().defined());
}

TEST(ConvModules, PaddingModes) {
  Generator gen(2);
  const Tensor x = uniform({1, 2, 9, 8}, 3, -1, 1, DType::f32);
  nn::Conv2d same(2, 3, 3, 2, nn::Padding::same(), 1, 1, true, gen);
  EXPECT_EQ(same.forward(x).shape(), (Shape{1, 3, 5, 4}));  // ceil(9/2), ceil(8/2)
  nn::Conv2d same_dw(2, 2, 5, 2, nn::Padding::same(), 1, 2, false, gen);
  EXPECT_EQ(same_dw.forward(x).shape(), (Shape{1, 2, 5, 4}));
  // automatic = timm's get_padding: ((stride - 1) + dilation (k - 1)) / 2
  nn::Conv2d k5s2(2, 3, 5, 2, nn::Padding::automatic(), 1, 1, true, gen);
  EXPECT_EQ(k5s2.params().pad_top, 2);
  EXPECT_EQ(k5s2.params().pad_left, 2);
  nn::Conv2d k3s1d2(2, 3, 3, 1, nn::Padding::automatic(), 2, 1, true, gen);
  EXPECT_EQ(k3s1d2.params().pad_top, 2);
  EXPECT_EQ(k3s1d2.forward(x).shape(), (Shape{1, 3, 9, 8}));
  nn::Conv2d rect(2, 3, 3, 1, nn::Padding(0, 1), 1, 1, true, gen);
  EXPECT_EQ(rect.forward(x).shape(), (Shape{1, 3, 7, 8}));
}

TEST(ConvModules, BadArguments) {
  EXPECT_ERROR_WITH(nn::Conv2d(4, 6, 3, 1, 1, 1, 3), "nn::Conv2d", "groups (3) must divide in_channels (4)");
  EXPECT_ERROR_WITH(nn::Conv2d(4, 6, 3, 1, 1, 1, 4), "nn::Conv2d", "groups (4) must divide out_channels (6)");
  EXPECT_ERROR_WITH(nn::Conv2d(4, 6, 0), "nn::Conv2d", "kernel_size, stride and dilation >= 1");
  EXPECT_ERROR_WITH(nn::Conv2d(4, 6, 3, 1, -1), "nn::Conv2d", "padding must be >= 0");
  EXPECT_ERROR_WITH(nn::ScaledStdConv2d(4, 6, 3, 1, 1, 1, 1, true, 1.0, -1e-5), "nn::ScaledStdConv2d", "eps");
  nn::Conv2d conv(4, 6, 3);
  EXPECT_ERROR_WITH(conv.forward(uniform({2, 3, 5, 5}, 1, -1, 1, DType::f32)), "nn::Conv2d",
                    "expected input [N, 4, H, W]", "[2, 3, 5, 5]");
  EXPECT_ERROR_WITH(conv.forward(uniform({4, 5, 5}, 1, -1, 1, DType::f32)), "nn::Conv2d", "expected input");
  nn::Conv1d c1(2, 2, 3);
  EXPECT_ERROR_WITH(c1.forward(uniform({2, 2, 3, 3}, 1, -1, 1, DType::f32)), "nn::Conv1d", "expected input [N, 2, L]");
}

TEST(ConvModules, ScaledStdConv2dIsTimmsFormula) {
  Generator gen(3);
  const double gamma = 1.7139588594436646, eps = 1e-5;
  nn::ScaledStdConv2d conv(3, 4, 3, 1, nn::Padding::automatic(), 1, 1, true, gamma, eps, 1.0, gen, DType::f64);
  EXPECT_EQ(names_of(conv), (std::vector<std::string>{"weight", "bias", "gain"}));
  EXPECT_EQ(conv.gain().shape(), (Shape{4, 1, 1, 1}));
  EXPECT_TRUE(all_close(conv.gain(), std::vector<double>(4, 1.0), 0, 0));
  EXPECT_TRUE(conv.named_parameters()[2].no_weight_decay);
  {
    arclight::NoGradGuard ng;
    Tensor g = conv.gain();
    ops::copy_(g, uniform({4, 1, 1, 1}, 4, 0.5, 1.5));
  }
  // timm: batch_norm(W.reshape(1, out, -1), eps) * (gain * gamma * fan_in^-0.5)
  const auto wv = conv.weight().to_vector<double>(), gv = conv.gain().to_vector<double>();
  std::vector<double> w_hat(wv.size());
  for (std::size_t o = 0; o < 4; ++o) {
    double mean = 0, var = 0;
    for (std::size_t k = 0; k < 27; ++k) mean += wv[o * 27 + k] / 27;
    for (std::size_t k = 0; k < 27; ++k) var += (wv[o * 27 + k] - mean) * (wv[o * 27 + k] - mean) / 27;
    for (std::size_t k = 0; k < 27; ++k)
      w_hat[o * 27 + k] = (wv[o * 27 + k] - mean) / std::sqrt(var + eps) * gv[o] * gamma / std::sqrt(27.0);
  }
  const Tensor w_hat_t = arclight::from_vector(w_hat, {4, 3, 3, 3}, DType::f64);
  EXPECT_TRUE(all_close(conv.standardized_weight(), w_hat_t, 1e-12, 1e-14));
  const Tensor x = uniform({2, 3, 6, 5}, 5);
  EXPECT_TRUE(all_close(conv.forward(x), arclight::layers_test::conv2d_reference(x, w_hat_t, conv.bias(),
                                                                                  ops::conv2d_params(1, 1)),
                        1e-12, 1e-12));
  // Gradients reach weight, bias and gain.
  ops::sum(conv.forward(x)).backward();
  for (const auto& p : conv.named_parameters()) EXPECT_TRUE(p.tensor.grad().defined()) << p.name;
}

// ---- batch norm --------------------------------------------------------------------------------------

TEST(BatchNormModules, StateDictMatchesTorch) {
  nn::BatchNorm2d bn(5);
  EXPECT_EQ(names_of(bn),
            (std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}));
  EXPECT_TRUE(all_close(bn.weight(), std::vector<double>(5, 1.0), 0, 0));
  EXPECT_TRUE(all_close(bn.bias(), std::vector<double>(5, 0.0), 0, 0));
  EXPECT_TRUE(all_close(bn.running_var(), std::vector<double>(5, 1.0), 0, 0));
  const auto s = shapes_of(bn);
  EXPECT_EQ(s.at("num_batches_tracked"), Shape{});
  EXPECT_EQ(bn.state_dict()[4].second.dtype(), DType::i64);
  EXPECT_EQ(bn.named_parameters().size(), 2u);
  for (const auto& p : bn.named_parameters()) EXPECT_TRUE(p.no_weight_decay) << p.name;
  nn::BatchNorm1d no_affine(3, 1e-5, 0.1, false, true);
  EXPECT_EQ(names_of(no_affine), (std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"}));
  nn::BatchNorm1d no_stats(3, 1e-5, 0.1, true, false);
  EXPECT_EQ(names_of(no_stats), (std::vector<std::string>{"weight", "bias"}));
}

TEST(BatchNormModules, RunningStatsAfterThreeTrainStepsThenEval) {
  for (auto [eps, momentum] : {std::pair{1e-5, 0.1}, std::pair{1e-3, 0.01}}) {
    nn::BatchNorm2d bn(3, eps, momentum, true, true, DType::f64);
    std::vector<double> rm(3, 0.0), rv(3, 1.0);
    for (int step = 0; step < 3; ++step) {
      const Tensor x = uniform({4, 3, 5, 5}, 100 + step, -2.0 + step, 3.0 + step);
      const Tensor y = bn.forward(x);
      EXPECT_TRUE(all_close(y, arclight::layers_test::batch_norm_reference(x, bn.weight(), bn.bias(), eps), 1e-12,
                            1e-12));
      const auto mean = ops::mean(x, {0, 2, 3}).to_vector<double>();
      const auto var_u = ops::var(x, {0, 2, 3}, 1).to_vector<double>();
      for (int c = 0; c < 3; ++c) {
        rm[c] = (1 - momentum) * rm[c] + momentum * mean[c];
        rv[c] = (1 - momentum) * rv[c] + momentum * var_u[c];
      }
    }
    EXPECT_EQ(bn.num_batches_tracked(), 3);
    EXPECT_TRUE(all_close(bn.running_mean(), rm, 1e-12, 1e-14));
    EXPECT_TRUE(all_close(bn.running_var(), rv, 1e-12, 1e-14));
    // eval: normalises with the running statistics and leaves them (and the counter) alone
    const auto rm_before_eval = bn.running_mean().to_vector<double>();
    bn.eval();
    const Tensor x = uniform({2, 3, 2, 2}, 200);
    const auto xv = x.to_vector<double>();
    std::vector<double> expect(xv.size());
    for (std::size_t i = 0; i < xv.size(); ++i) {
      const std::size_t c = (i / 4) % 3;
      expect[i] = (xv[i] - rm[c]) / std::sqrt(rv[c] + eps);
    }
    EXPECT_TRUE(all_close(bn.forward(x), expect, 1e-12, 1e-14));
    EXPECT_EQ(bn.num_batches_tracked(), 3);
    EXPECT_TRUE(all_close(bn.running_mean(), rm_before_eval, 0, 0));
    // eval with a single sample works (running statistics); train with one value per channel does not
    EXPECT_NO_THROW(bn.forward(uniform({1, 3, 1, 1}, 201)));
    bn.train();
    EXPECT_ERROR_WITH(bn.forward(uniform({1, 3, 1, 1}, 202)), "batch_norm", "more than 1 value per channel");
  }
}

TEST(BatchNormModules, BatchNorm1dAndFusedActAndBadInput) {
  nn::BatchNorm1d bn1(4, 1e-5, 0.1, true, true, DType::f64);
  const Tensor x2 = uniform({6, 4}, 1), x3 = uniform({3, 4, 5}, 2);
  EXPECT_TRUE(all_close(bn1.forward(x2), arclight::layers_test::batch_norm_reference(x2, bn1.weight(), bn1.bias(), 1e-5),
                        1e-12, 1e-12));
  EXPECT_TRUE(all_close(bn1.forward(x3), arclight::layers_test::batch_norm_reference(x3, bn1.weight(), bn1.bias(), 1e-5),
                        1e-12, 1e-12));
  EXPECT_EQ(bn1.num_batches_tracked(), 2);
  EXPECT_ERROR_WITH(bn1.forward(uniform({2, 4, 2, 2}, 3)), "nn::BatchNorm1d", "expected input of rank 2 or 3");
  EXPECT_ERROR_WITH(bn1.forward(uniform({6, 5}, 3)), "nn::BatchNorm1d", "channel mismatch", "num_features 4");

  nn::BatchNormAct2d bna(3, ops::Activation::SiLU, 1e-5, 0.1, true, true, DType::f64);
  EXPECT_EQ(names_of(bna),
            (std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}));
  const Tensor x = uniform({2, 3, 4, 4}, 4);
  EXPECT_TRUE(all_close(bna.forward(x),
                        ops::silu(arclight::layers_test::batch_norm_reference(x, bna.weight(), bna.bias(), 1e-5)),
                        1e-12, 1e-12));
  nn::BatchNorm2d bn2(3);
  EXPECT_ERROR_WITH(bn2.forward(uniform({2, 3, 4}, 5, -1, 1, DType::f32)), "nn::BatchNorm2d", "rank 4");
  EXPECT_ERROR_WITH(nn::BatchNorm2d(0), "nn::BatchNorm2d", "num_features > 0");
  EXPECT_ERROR_WITH(nn::BatchNorm2d(3, 1e-5, 2.0), "nn::BatchNorm2d", "momentum must be in [0, 1]");
}

// ---- activations -------------------------------------------------------------------------------------

TEST(ActivationModules, NoParametersAndPReLU) {
  const Tensor x = uniform({2, 3, 2, 2}, 10);
  for (auto act : {ops::Activation::ReLU, ops::Activation::SiLU, ops::Activation::GELU, ops::Activation::Sigmoid,
                   ops::Activation::Identity}) {
    auto m = nn::make_activation(act);
    EXPECT_TRUE(m->state_dict().empty()) << m->type_name();
    EXPECT_TRUE(all_close(m->forward(x), ops::activation(x, act), 0, 0)) << m->type_name();
  }
  EXPECT_EQ(nn::SiLU().type_name(), "SiLU");
  EXPECT_EQ(nn::make_activation(ops::Activation::GELU)->type_name(), "GELU");
  nn::PReLU shared;
  EXPECT_EQ(names_of(shared), (std::vector<std::string>{"weight"}));
  EXPECT_TRUE(all_close(shared.weight(), std::vector<double>{0.25}, 0, 0));
  nn::PReLU per_channel(3, 0.1, DType::f64);
  EXPECT_EQ(per_channel.weight().shape(), (Shape{3}));
  EXPECT_TRUE(all_close(per_channel.forward(x), ops::prelu(x, arclight::full({3}, 0.1, DType::f64)), 0, 0));
  nn::PReLU wrong(4, 0.25, DType::f64);
  EXPECT_ERROR_WITH(wrong.forward(x), "prelu", "weight has 4 elements");
  EXPECT_ERROR_WITH(nn::PReLU(0), "nn::PReLU", "num_parameters >= 1");
}

// ---- attention ----------------------------------------------------------------------------------------

TEST(AttentionModules, SqueezeExciteKeysAndComposition) {
  Generator gen(20);
  nn::SqueezeExcite se(8, 2, ops::Activation::SiLU, gen, DType::f64);
  const auto s = shapes_of(se);
  EXPECT_EQ(names_of(se), (std::vector<std::string>{"conv_reduce.weight", "conv_reduce.bias", "conv_expand.weight",
                                                      "conv_expand.bias"}));
  EXPECT_EQ(s.at("conv_reduce.weight"), (Shape{2, 8, 1, 1}));
  EXPECT_EQ(s.at("conv_expand.weight"), (Shape{8, 2, 1, 1}));
  const Tensor x = uniform({3, 8, 4, 5}, 21);
  // x · sigmoid(W2 silu(W1 mean(x) + b1) + b2), composed from generic ops
  const Tensor m = ops::mean(x, {2, 3}, true);
  const Tensor h = ops::silu(ops::conv2d(m, se.reduce()->weight(), se.reduce()->bias()));
  const Tensor gate = ops::sigmoid(ops::conv2d(h, se.expand()->weight(), se.expand()->bias()));
  EXPECT_TRUE(all_close(se.forward(x), ops::mul(x, gate), 1e-12, 1e-14));

  nn::SEModule se2(8, 4, ops::Activation::ReLU, true, gen);
  EXPECT_EQ(names_of(se2), (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}));
  nn::SEModule se3(8, 4, ops::Activation::ReLU, false, gen);
  EXPECT_EQ(names_of(se3), (std::vector<std::string>{"fc1.weight", "fc2.weight"}));
  EXPECT_ERROR_WITH(se.forward(uniform({3, 7, 4, 5}, 22)), "nn::SqueezeExcite", "expected input [N, 8, H, W]");
  EXPECT_ERROR_WITH(nn::SqueezeExcite(8, 0), "nn::SqueezeExcite", "rd_channels > 0");
}

TEST(AttentionModules, EcaKernelSizeKeysAndComposition) {
  // timm: t = int(|log2 C + 1| / 2), odd-ified, at least 3
  EXPECT_EQ(nn::EcaModule::kernel_size_for(16), 3);    // int(5/2)=2 -> 3
  EXPECT_EQ(nn::EcaModule::kernel_size_for(64), 3);    // int(7/2)=3
  EXPECT_EQ(nn::EcaModule::kernel_size_for(256), 5);   // int(9/2)=4 -> 5
  EXPECT_EQ(nn::EcaModule::kernel_size_for(1536), 5);  // int(11.58/2)=5
  EXPECT_EQ(nn::EcaModule::kernel_size_for(2048), 7);  // int(12/2)=6 -> 7
  Generator gen(30);
  nn::EcaModule eca(256, 3, 2.0, 1.0, gen, DType::f64);
  EXPECT_EQ(eca.kernel_size(), 5);
  EXPECT_EQ(names_of(eca), (std::vector<std::string>{"conv.weight"}));
  EXPECT_EQ(shapes_of(eca).at("conv.weight"), (Shape{1, 1, 5}));
  const Tensor x = uniform({2, 256, 3, 3}, 31);
  // gate[n, c] = sigmoid(Σ_j w[j] · mean[n, c + j − 2]) with zero padding
  const auto mean = ops::mean(x, {2, 3}).to_vector<double>();
  const auto w = eca.conv()->weight().to_vector<double>();
  const auto xv = x.to_vector<double>();
  std::vector<double> expect(xv.size());
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t c = 0; c < 256; ++c) {
      double z = 0;
      for (std::int64_t j = 0; j < 5; ++j) {
        const std::int64_t cc = c + j - 2;
        if (cc >= 0 && cc < 256) z += w[std::size_t(j)] * mean[std::size_t(n * 256 + cc)];
      }
      const double g = 1.0 / (1.0 + std::exp(-z));
      for (std::int64_t k = 0; k < 9; ++k) expect[std::size_t((n * 256 + c) * 9 + k)] = xv[std::size_t((n * 256 + c) * 9 + k)] * g;
    }
  EXPECT_TRUE(all_close(eca.forward(x), expect, 1e-12, 1e-14));
  EXPECT_ERROR_WITH(nn::EcaModule(0, 4), "nn::EcaModule", "kernel size must be odd");
  nn::EcaModule by_kernel(0, 7);
  EXPECT_EQ(by_kernel.kernel_size(), 7);
}

// ---- dropout / drop path ------------------------------------------------------------------------------

TEST(DropModules, TrainEvalBehaviourAndReproducibility) {
  const Tensor x = uniform({8, 4, 3, 3}, 40, 1.0, 2.0, DType::f32);
  Generator g1(9), g2(9);
  nn::Dropout d1(0.4, g1), d2(0.4, g2);
  EXPECT_TRUE(all_close(d1.forward(x), d2.forward(x), 0, 0));  // same seed, same mask
  const auto y = d1.forward(x).to_vector<double>();
  std::size_t zeros = 0;
  for (double v : y) zeros += v == 0;
  EXPECT_GT(zeros, 0u);
  d1.eval();
  EXPECT_TRUE(d1.forward(x).is_same(x));
  EXPECT_TRUE(d1.state_dict().empty());

  Generator g3(10);
  nn::DropPath dp(0.5, g3);
  const auto yp = dp.forward(x).to_vector<double>(), xv = x.to_vector<double>();
  int dropped = 0;
  for (std::size_t n = 0; n < 8; ++n) {
    const bool keep = yp[n * 36] != 0;
    dropped += !keep;
    for (std::size_t k = 0; k < 36; ++k) EXPECT_NEAR(yp[n * 36 + k], keep ? xv[n * 36 + k] * 2.0 : 0.0, 1e-5);
  }
  EXPECT_GT(dropped, 0);
  dp.eval();
  EXPECT_TRUE(dp.forward(x).is_same(x));
  nn::DropPath zero(0.0);
  EXPECT_TRUE(zero.forward(x).is_same(x));
  EXPECT_ERROR_WITH(nn::Dropout(-0.5), "nn::Dropout", "drop probability must be in [0, 1]");
  EXPECT_ERROR_WITH(nn::DropPath(2.0), "nn::DropPath", "drop probability must be in [0, 1]");
}

TEST(DropModules, TrainEvalPropagatesThroughSequential) {
  auto seq = std::make_shared<nn::Sequential>();
  auto bn = std::make_shared<nn::BatchNorm2d>(3);
  auto dp = std::make_shared<nn::DropPath>(0.5);
  seq->push_back(bn);
  seq->push_back(dp);
  seq->eval();
  EXPECT_FALSE(bn->is_training());
  EXPECT_FALSE(dp->is_training());
  seq->train();
  EXPECT_TRUE(bn->is_training());
  EXPECT_TRUE(dp->is_training());
}

// ---- pooling / flatten and a small block end to end ---------------------------------------------------

TEST(PoolingModules, ShapesAndValues) {
  const Tensor x = uniform({2, 3, 7, 6}, 50);
  EXPECT_EQ(nn::AvgPool2d(2, 2, 0, true, false).forward(x).shape(), (Shape{2, 3, 4, 3}));
  EXPECT_TRUE(all_close(nn::AvgPool2d(3, 2, 1).forward(x), ops::avg_pool2d(x, 3, 2, 1), 0, 0));
  EXPECT_TRUE(all_close(nn::MaxPool2d(3, 2, 1).forward(x), ops::max_pool2d(x, 3, 2, 1), 0, 0));
  EXPECT_TRUE(all_close(nn::AdaptiveAvgPool2d(1).forward(x), ops::mean(x, {2, 3}, true), 1e-14, 1e-15));
  EXPECT_EQ(nn::Flatten().forward(x).shape(), (Shape{2, 126}));
  EXPECT_EQ(nn::Flatten(0, 1).forward(x).shape(), (Shape{6, 7, 6}));
  EXPECT_ERROR_WITH(nn::AdaptiveAvgPool2d(7), "nn::AdaptiveAvgPool2d", "only output size 1");
  EXPECT_ERROR_WITH(nn::AvgPool2d(2, 2, 2), "nn::AvgPool2d", "padding <= kernel_size / 2");
}

TEST(Blocks, ConvBnActSePoolTrainsEveryParameter) {
  Generator gen(60);
  nn::Sequential block;
  block.push_back(std::make_shared<nn::Conv2d>(3, 8, 3, 2, nn::Padding::same(), 1, 1, false, gen));
  block.push_back(std::make_shared<nn::BatchNormAct2d>(8, ops::Activation::SiLU));
  block.push_back(std::make_shared<nn::Conv2d>(8, 8, 5, 1, 2, 1, 8, false, gen));  // depthwise
  block.push_back(std::make_shared<nn::BatchNorm2d>(8));
  block.push_back(std::make_shared<nn::SqueezeExcite>(8, 2, ops::Activation::SiLU, gen));
  block.push_back(std::make_shared<nn::ScaledStdConv2d>(8, 4, 1, 1, nn::Padding::automatic(), 1, 1, true, 1.0, 1e-5,
                                                        1.0, gen));
  block.push_back(std::make_shared<nn::DropPath>(0.2, gen));
  block.push_back(std::make_shared<nn::AdaptiveAvgPool2d>(1));
  block.push_back(std::make_shared<nn::Flatten>());
  const auto names = names_of(block);
  EXPECT_EQ(names.front(), "0.weight");
  EXPECT_NE(std::find(names.begin(), names.end(), "4.conv_reduce.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "5.gain"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "1.num_batches_tracked"), names.end());
  const Tensor y = block.forward(uniform({4, 3, 9, 9}, 61, -1, 1, DType::f32));
  EXPECT_EQ(y.shape(), (Shape{4, 4}));
  ops::sum(ops::mul(y, y)).backward();
  for (const auto& p : block.named_parameters()) {
    ASSERT_TRUE(p.tensor.grad().defined()) << p.name;
    double norm = 0;
    for (double v : p.tensor.grad().to_vector<double>()) norm += v * v;
    EXPECT_TRUE(std::isfinite(norm)) << p.name;
  }
}

}  // namespace
