// float64 central-difference checks of every backward pass of the convolution-block kernels: conv (groups,
// depthwise incl. multiplier, stride 2, dilation 2, TF "same" with asymmetric pads, bias, every algorithm),
// the weight-standardised conv through the standardisation to W and gain, batch norm in train mode (through
// the batch statistics, plain and fused with an activation) and eval mode, activations, PReLU, pooling,
// global average pooling and the squeeze-excite scaling. Each uses the scalar loss L = sum(r * y) with a fixed
// random r, so the analytic gradient is the kernel's backward with dy = r.
#include <gtest/gtest.h>

#include <array>
#include <ostream>
#include <string>
#include <vector>

#include "conv/conv_test_util.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/batch_norm.hpp"
#include "kernels/cpu/conv2d.hpp"
#include "kernels/cpu/pooling.hpp"
#include "kernels/cpu/squeeze_excite.hpp"
#include "kernels/cpu/weight_standardization.hpp"

namespace {

namespace cpu = arclight::kernels::cpu;
namespace t = arclight::test;
using arclight::kernels::Activation;
using arclight::kernels::Conv2dParams;
using arclight::kernels::Conv2dShape;
using arclight::kernels::PadMode;

struct GradCase {
  std::string name;
  std::array<std::int64_t, 4> in, wt;
  Conv2dParams p;
  bool bias;
  cpu::ConvAlgo algo;
  std::size_t budget;
};
// gtest prints a failing parameter by its name instead of its bytes.
void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

Conv2dParams params(std::int64_t stride, std::int64_t pad, std::int64_t dil, std::int64_t groups,
                    PadMode mode = PadMode::Explicit) {
  Conv2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = pad;
  p.dilation_h = p.dilation_w = dil;
  p.groups = groups;
  p.pad_mode = mode;
  return p;
}

std::vector<GradCase> grad_cases() {
  const auto big = cpu::kConvColumnBudgetBytes;
  Conv2dParams asym = params(1, 0, 1, 1);
  asym.pad_top = 2;
  asym.pad_right = 1;
  return {
      {"groups2_bias", {2, 4, 5, 5}, {6, 2, 3, 3}, params(1, 1, 1, 2), true, cpu::ConvAlgo::Auto, big},
      {"stride2_bias", {2, 3, 7, 6}, {4, 3, 3, 3}, params(2, 1, 1, 1), true, cpu::ConvAlgo::Auto, big},
      {"dilation2", {1, 2, 7, 7}, {3, 2, 3, 3}, params(1, 2, 2, 1), false, cpu::ConvAlgo::Auto, big},
      {"same_stride2_asym", {2, 2, 6, 6}, {3, 2, 3, 3}, params(2, 0, 1, 1, PadMode::Same), true, cpu::ConvAlgo::Auto,
       big},
      {"same_k4_asym_row_bands", {1, 2, 5, 6}, {2, 2, 4, 4}, params(1, 0, 1, 1, PadMode::Same), true,
       cpu::ConvAlgo::Im2col, 1},
      {"explicit_asym", {2, 2, 5, 4}, {3, 2, 3, 2}, asym, true, cpu::ConvAlgo::Auto, big},
      {"pointwise_gemm_groups", {2, 4, 3, 4}, {6, 2, 1, 1}, params(1, 0, 1, 2), true, cpu::ConvAlgo::Auto, big},
      {"depthwise_k3", {2, 3, 6, 5}, {3, 1, 3, 3}, params(1, 1, 1, 3), true, cpu::ConvAlgo::Auto, big},
      {"depthwise_k5_s2_same", {2, 3, 7, 8}, {3, 1, 5, 5}, params(2, 0, 1, 3, PadMode::Same), true,
       cpu::ConvAlgo::Auto, big},
      {"depthwise_mult2_dil2", {1, 2, 7, 6}, {4, 1, 3, 3}, params(1, 2, 2, 2), true, cpu::ConvAlgo::Auto, big},
      {"depthwise_k5_s1_same_mult2", {1, 2, 7, 9}, {4, 1, 5, 5}, params(1, 0, 1, 2, PadMode::Same), true,
       cpu::ConvAlgo::Auto, big},
      {"depthwise_via_im2col", {2, 3, 6, 5}, {3, 1, 3, 3}, params(2, 1, 1, 3), true, cpu::ConvAlgo::Im2col, big},
  };
}

class ConvGradcheck : public ::testing::TestWithParam<GradCase> {};

TEST_P(ConvGradcheck, InputWeightBias) {
  const GradCase& c = GetParam();
  const Conv2dShape s = cpu::make_conv2d_shape(c.in, c.wt, c.p, c.bias ? c.wt[0] : -1);
  const cpu::Conv2dOptions opt{c.algo, c.budget};
  auto x = t::random_vector(s.input_numel(), 1), w = t::random_vector(s.weight_numel(), 2),
       b = t::random_vector(s.c_out, 3);
  const auto r = t::random_vector(s.output_numel(), 4);
  auto loss = [&] {
    std::vector<double> y(std::size_t(s.output_numel()));
    cpu::conv2d_forward(s, x.data(), w.data(), c.bias ? b.data() : nullptr, y.data(), opt);
    return t::dot(r, y);
  };
  auto dx = t::garbage<double>(s.input_numel()), dw = t::garbage<double>(s.weight_numel()),
       db = t::garbage<double>(s.c_out);
  cpu::conv2d_backward_data(s, r.data(), w.data(), dx.data(), opt);
  cpu::conv2d_backward_weight(s, x.data(), r.data(), dw.data(), c.bias ? db.data() : nullptr, opt);
  EXPECT_TRUE(t::gradcheck(x, dx, loss, "dx"));
  EXPECT_TRUE(t::gradcheck(w, dw, loss, "dw"));
  if (c.bias) {
    EXPECT_TRUE(t::gradcheck(b, db, loss, "dbias"));
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, ConvGradcheck, ::testing::ValuesIn(grad_cases()),
                         [](const ::testing::TestParamInfo<GradCase>& info) { return info.param.name; });

// Weight-standardised conv: L = sum r * conv(x, ws(W, gain)); gradients to x, W (through the mean and the
// variance) and gain.
TEST(CpuWsConvGradcheck, ThroughStandardisation) {
  for (int groups : {1, 2}) {
    SCOPED_TRACE(groups);
    const std::array<std::int64_t, 4> in{2, 4, 5, 5}, wt{4, 4 / groups, 3, 3};
    const Conv2dShape s = cpu::make_conv2d_shape(in, wt, params(1, 1, 1, groups));
    const std::int64_t fan_in = s.fan_in();
    const double gamma = 1.7139588594436646, eps = 1e-3;
    auto x = t::random_vector(s.input_numel(), 11), w = t::random_vector(s.weight_numel(), 12, -0.3, 0.4),
         gain = t::random_vector(s.c_out, 13, 0.5, 1.5);
    const auto r = t::random_vector(s.output_numel(), 14);
    auto loss = [&] {
      std::vector<double> w_hat(w.size()), y(std::size_t(s.output_numel()));
      cpu::ws_forward(w.data(), gain.data(), gamma, eps, s.c_out, fan_in, w_hat.data());
      cpu::conv2d_forward(s, x.data(), w_hat.data(), static_cast<const double*>(nullptr), y.data());
      return t::dot(r, y);
    };
    std::vector<double> w_hat(w.size());
    cpu::ws_forward(w.data(), gain.data(), gamma, eps, s.c_out, fan_in, w_hat.data());
    auto d_w_hat = t::garbage<double>(s.weight_numel()), dw = t::garbage<double>(s.weight_numel()),
         dgain = t::garbage<double>(s.c_out), dx = t::garbage<double>(s.input_numel());
    cpu::conv2d_backward_weight(s, x.data(), r.data(), d_w_hat.data(), static_cast<double*>(nullptr));
    cpu::conv2d_backward_data(s, r.data(), w_hat.data(), dx.data());
    cpu::ws_backward(w.data(), gain.data(), gamma, eps, s.c_out, fan_in, d_w_hat.data(), dw.data(), dgain.data());
    EXPECT_TRUE(t::gradcheck(x, dx, loss, "dx"));
    EXPECT_TRUE(t::gradcheck(w, dw, loss, "dw", 1e-6, 1e-5, 1e-7));
    EXPECT_TRUE(t::gradcheck(gain, dgain, loss, "dgain", 1e-6, 1e-5, 1e-7));
  }
}

// ---- batch norm ----------------------------------------------------------------------------------------

void bn_train_gradcheck(const cpu::BatchNormShape& s, Activation act) {
  auto x = t::random_vector(s.numel(), 21, -2, 3), w = t::random_vector(s.c, 22, 0.5, 1.5),
       b = t::random_vector(s.c, 23);
  const auto r = t::random_vector(s.numel(), 24);
  const double eps = 1e-5;
  auto loss = [&] {
    std::vector<double> y(std::size_t(s.numel())), rm(std::size_t(s.c), 0.0), rv(std::size_t(s.c), 1.0);
    cpu::batch_norm_forward_train(s, x.data(), w.data(), b.data(), eps, 0.1, rm.data(), rv.data(), y.data(),
                                  static_cast<double*>(nullptr), static_cast<double*>(nullptr), act);
    return t::dot(r, y);
  };
  std::vector<double> y(std::size_t(s.numel())), rm(std::size_t(s.c), 0.0), rv(std::size_t(s.c), 1.0),
      sm(std::size_t(s.c)), si(std::size_t(s.c));
  cpu::batch_norm_forward_train(s, x.data(), w.data(), b.data(), eps, 0.1, rm.data(), rv.data(), y.data(), sm.data(),
                                si.data(), act);
  auto dx = t::garbage<double>(s.numel()), dw = t::garbage<double>(s.c), db = t::garbage<double>(s.c);
  cpu::batch_norm_backward_train(s, x.data(), r.data(), w.data(), b.data(), sm.data(), si.data(), dx.data(), dw.data(),
                                 db.data(), act);
  EXPECT_TRUE(t::gradcheck(x, dx, loss, "dx", 1e-6, 1e-5, 1e-7));
  EXPECT_TRUE(t::gradcheck(w, dw, loss, "dweight", 1e-6, 1e-5, 1e-7));
  EXPECT_TRUE(t::gradcheck(b, db, loss, "dbias", 1e-6, 1e-5, 1e-7));
  // dx may alias dy.
  auto dy_inplace = r;
  cpu::batch_norm_backward_train(s, x.data(), dy_inplace.data(), w.data(), b.data(), sm.data(), si.data(),
                                 dy_inplace.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr), act);
  EXPECT_TRUE(t::all_close(dy_inplace, dx, 1e-13, 1e-13));
}

TEST(CpuBatchNormGradcheck, Train2d) { bn_train_gradcheck({3, 4, 6}, Activation::Identity); }
TEST(CpuBatchNormGradcheck, Train1d) { bn_train_gradcheck({6, 5, 1}, Activation::Identity); }
TEST(CpuBatchNormGradcheck, TrainFusedSiLU) { bn_train_gradcheck({2, 3, 5}, Activation::SiLU); }
TEST(CpuBatchNormGradcheck, TrainFusedGELU) { bn_train_gradcheck({2, 3, 5}, Activation::GELU); }
TEST(CpuBatchNormGradcheck, TrainFusedReLU) { bn_train_gradcheck({2, 3, 5}, Activation::ReLU); }
TEST(CpuBatchNormGradcheck, TrainFusedSigmoid) { bn_train_gradcheck({2, 3, 5}, Activation::Sigmoid); }

TEST(CpuBatchNormGradcheck, EvalPlainAndFused) {
  for (Activation act : {Activation::Identity, Activation::SiLU}) {
    SCOPED_TRACE(cpu::activation_name(act));
    const cpu::BatchNormShape s{2, 3, 4};
    auto x = t::random_vector(s.numel(), 31, -2, 2), w = t::random_vector(3, 32, 0.5, 1.5), b = t::random_vector(3, 33);
    const auto rm = t::random_vector(3, 34), rv = t::random_vector(3, 35, 0.3, 2.0), r = t::random_vector(s.numel(), 36);
    const double eps = 1e-3;
    auto loss = [&] {
      std::vector<double> y(std::size_t(s.numel()));
      cpu::batch_norm_forward_eval(s, x.data(), w.data(), b.data(), eps, rm.data(), rv.data(), y.data(), act);
      return t::dot(r, y);
    };
    auto dx = t::garbage<double>(s.numel()), dw = t::garbage<double>(3), db = t::garbage<double>(3);
    cpu::batch_norm_backward_eval(s, x.data(), r.data(), w.data(), b.data(), eps, rm.data(), rv.data(), dx.data(),
                                  dw.data(), db.data(), act);
    EXPECT_TRUE(t::gradcheck(x, dx, loss, "dx", 1e-6, 1e-6, 1e-8));
    EXPECT_TRUE(t::gradcheck(w, dw, loss, "dweight", 1e-6, 1e-6, 1e-8));
    EXPECT_TRUE(t::gradcheck(b, db, loss, "dbias", 1e-6, 1e-6, 1e-8));
  }
}

// ---- activations and PReLU --------------------------------------------------------------------------------

TEST(CpuActivationGradcheck, AllActivations) {
  for (Activation act : {Activation::ReLU, Activation::SiLU, Activation::GELU, Activation::Sigmoid,
                         Activation::Identity}) {
    SCOPED_TRACE(cpu::activation_name(act));
    auto x = t::random_away_from_zero(64, 41);
    const auto r = t::random_vector(64, 42);
    auto loss = [&] {
      std::vector<double> y(64);
      cpu::activation_forward(act, x.data(), y.data(), 64);
      return t::dot(r, y);
    };
    auto dx = t::garbage<double>(64);
    cpu::activation_backward(act, x.data(), r.data(), dx.data(), 64);
    EXPECT_TRUE(t::gradcheck(x, dx, loss, "dx", 1e-6, 1e-6, 1e-8));
  }
}

TEST(CpuActivationGradcheck, PReluSharedAndPerChannel) {
  for (std::int64_t nw : {1, 3}) {
    SCOPED_TRACE(nw);
    const cpu::PReluShape s{2, 3, 5, nw};
    auto x = t::random_away_from_zero(30, 51), a = t::random_vector(nw, 52, 0.05, 0.4);
    const auto r = t::random_vector(30, 53);
    auto loss = [&] {
      std::vector<double> y(30);
      cpu::prelu_forward(s, x.data(), a.data(), y.data());
      return t::dot(r, y);
    };
    auto dx = t::garbage<double>(30), da = t::garbage<double>(nw);
    cpu::prelu_backward(s, x.data(), a.data(), r.data(), dx.data(), da.data());
    EXPECT_TRUE(t::gradcheck(x, dx, loss, "dx"));
    EXPECT_TRUE(t::gradcheck(a, da, loss, "dweight"));
  }
}

// ---- pooling and SE ---------------------------------------------------------------------------------------

TEST(CpuPoolingGradcheck, AvgPoolVariants) {
  struct P {
    std::int64_t h, w, k, s, pad;
    bool ceil, cip;
  };
  for (const P& p : {P{5, 5, 2, 2, 0, true, false}, P{6, 7, 3, 2, 1, false, true}, P{6, 7, 3, 2, 1, true, false},
                     P{4, 4, 2, 2, 0, false, true}}) {
    SCOPED_TRACE(::testing::Message() << p.h << "x" << p.w << " k" << p.k << " s" << p.s << " p" << p.pad);
    const auto s = cpu::make_pool2d_shape(std::array<std::int64_t, 4>{2, 2, p.h, p.w}, p.k, p.k, p.s, p.s, p.pad,
                                          p.pad, p.ceil);
    auto x = t::random_vector(s.input_numel(), 61);
    const auto r = t::random_vector(s.output_numel(), 62);
    auto loss = [&] {
      std::vector<double> y(std::size_t(s.output_numel()));
      cpu::avg_pool2d_forward(s, x.data(), y.data(), p.cip);
      return t::dot(r, y);
    };
    auto dx = t::garbage<double>(s.input_numel());
    cpu::avg_pool2d_backward(s, r.data(), dx.data(), p.cip);
    EXPECT_TRUE(t::gradcheck(x, dx, loss, "dx"));
  }
}

TEST(CpuPoolingGradcheck, MaxPool) {
  const auto s = cpu::make_pool2d_shape(std::array<std::int64_t, 4>{2, 2, 7, 6}, 3, 3, 2, 2, 1, 1, false);
  auto x = t::random_vector(s.input_numel(), 71);  // distinct values: the argmax is stable under 1e-6 steps
  const auto r = t::random_vector(s.output_numel(), 72);
  auto loss = [&] {
    std::vector<double> y(std::size_t(s.output_numel()));
    cpu::max_pool2d_forward(s, x.data(), y.data(), static_cast<std::int64_t*>(nullptr));
    return t::dot(r, y);
  };
  std::vector<double> y(std::size_t(s.output_numel()));
  std::vector<std::int64_t> idx(std::size_t(s.output_numel()));
  cpu::max_pool2d_forward(s, x.data(), y.data(), idx.data());
  auto dx = t::garbage<double>(s.input_numel());
  cpu::max_pool2d_backward(s, r.data(), idx.data(), dx.data());
  EXPECT_TRUE(t::gradcheck(x, dx, loss, "dx"));
}

TEST(CpuPoolingGradcheck, GlobalAvgPool) {
  auto x = t::random_vector(2 * 3 * 7, 81);
  const auto r = t::random_vector(6, 82);
  auto loss = [&] {
    std::vector<double> y(6);
    cpu::global_avg_pool_forward(2, 3, 7, x.data(), y.data());
    return t::dot(r, y);
  };
  auto dx = t::garbage<double>(42);
  cpu::global_avg_pool_backward(2, 3, 7, r.data(), dx.data());
  EXPECT_TRUE(t::gradcheck(x, dx, loss, "dx"));
}

TEST(CpuSqueezeExciteGradcheck, InputAndGate) {
  auto x = t::random_vector(2 * 4 * 6, 91), g = t::random_vector(8, 92, 0, 1);
  const auto r = t::random_vector(48, 93);
  auto loss = [&] {
    std::vector<double> y(48);
    cpu::se_scale_forward(2, 4, 6, x.data(), g.data(), y.data());
    return t::dot(r, y);
  };
  auto dx = t::garbage<double>(48), dg = t::garbage<double>(8);
  cpu::se_scale_backward(2, 4, 6, x.data(), g.data(), r.data(), dx.data(), dg.data());
  EXPECT_TRUE(t::gradcheck(x, dx, loss, "dx"));
  EXPECT_TRUE(t::gradcheck(g, dg, loss, "dgate"));
}

}  // namespace
