// Unit tests of the non-conv kernels of the convolution blocks: scaled weight standardisation, batch norm
// (train statistics, running statistics over several steps, eval, fused activation, in place), activations
// and PReLU, pooling (torch semantics incl. ceil_mode / count_include_pad, argmax indices, NaN), global average
// pooling and the squeeze-excite scaling, each against an independent double reference in double and float,
// with outputs pre-filled with NaN; plus the error messages of bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "conv/conv_test_util.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/batch_norm.hpp"
#include "kernels/cpu/pooling.hpp"
#include "kernels/cpu/squeeze_excite.hpp"
#include "kernels/cpu/weight_standardization.hpp"

namespace {

namespace cpu = arclight::kernels::cpu;
namespace t = arclight::test;
using arclight::kernels::Activation;

template <typename T>
class CpuConvBlockTyped : public ::testing::Test {};
using ScalarTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CpuConvBlockTyped, ScalarTypes);

// ---- weight standardisation ----------------------------------------------------------------------------

std::vector<double> ref_ws(const std::vector<double>& w, const std::vector<double>& gain, double gamma, double eps,
                           std::int64_t c_out, std::int64_t fan_in) {
  std::vector<double> out(w.size());
  for (std::int64_t o = 0; o < c_out; ++o) {
    double mean = 0;
    for (std::int64_t k = 0; k < fan_in; ++k) mean += w[std::size_t(o * fan_in + k)] / double(fan_in);
    double var = 0;  // biased
    for (std::int64_t k = 0; k < fan_in; ++k) var += std::pow(w[std::size_t(o * fan_in + k)] - mean, 2) / double(fan_in);
    for (std::int64_t k = 0; k < fan_in; ++k)
      out[std::size_t(o * fan_in + k)] =
          gain[std::size_t(o)] * gamma * (w[std::size_t(o * fan_in + k)] - mean) / std::sqrt(var * double(fan_in) + eps);
  }
  return out;
}

TYPED_TEST(CpuConvBlockTyped, WeightStandardisationMatchesFormula) {
  using T = TypeParam;
  const std::int64_t c_out = 5, fan_in = 3 * 3 * 3;
  const auto w = t::random_vector(c_out * fan_in, 31, -0.5, 0.7);
  const auto gain = t::random_vector(c_out, 32, 0.5, 1.5);
  const double gamma = 1.7015043497085571, eps = 1e-4;  // GELU's gamma (METHOD.md)
  const auto want = ref_ws(w, gain, gamma, eps, c_out, fan_in);
  const auto wt = t::cast_vector<T>(w), gt = t::cast_vector<T>(gain);
  auto got = t::garbage<T>(c_out * fan_in);
  auto mean = t::garbage<T>(c_out), inv = t::garbage<T>(c_out);
  cpu::ws_forward<T>(wt.data(), gt.data(), T(gamma), T(eps), c_out, fan_in, got.data(), mean.data(), inv.data());
  EXPECT_TRUE(t::close_to_reference(got, want));
  // Each standardised row has zero mean and squared norm (gain gamma)^2 * S / (S + eps), S = sum (w - mean)^2.
  for (std::int64_t o = 0; o < c_out; ++o) {
    double s1 = 0, s2 = 0;
    for (std::int64_t k = 0; k < fan_in; ++k) {
      s1 += double(got[std::size_t(o * fan_in + k)]);
      s2 += std::pow(double(got[std::size_t(o * fan_in + k)]), 2);
    }
    const double S = 1.0 / std::pow(double(inv[std::size_t(o)]), 2) - eps;
    EXPECT_NEAR(s1, 0.0, 1e-5);
    EXPECT_NEAR(s2, std::pow(gain[std::size_t(o)] * gamma, 2) * S / (S + eps), 1e-4);
  }
  // No gain means gain = 1.
  auto got1 = t::garbage<T>(c_out * fan_in);
  cpu::ws_forward<T>(wt.data(), nullptr, T(gamma), T(eps), c_out, fan_in, got1.data());
  EXPECT_TRUE(t::close_to_reference(got1, ref_ws(w, std::vector<double>(c_out, 1.0), gamma, eps, c_out, fan_in)));
}

TEST(CpuWeightStdErrors, BadArguments) {
  std::vector<float> w(12, 0.5f), out(12), g(3, 1.f);
  EXPECT_TRUE(t::throws_with([&] { cpu::ws_forward<float>(w.data(), g.data(), 1.f, 1e-5f, 0, 4, out.data()); },
                             {"ws_forward", "c_out > 0", "got c_out 0"}));
  EXPECT_TRUE(t::throws_with([&] { cpu::ws_forward<float>(w.data(), g.data(), 1.f, -1.f, 3, 4, out.data()); },
                             {"ws_forward", "eps must be >= 0"}));
  EXPECT_TRUE(t::throws_with(
      [&] { cpu::ws_backward<float>(w.data(), nullptr, 1.f, 1e-5f, 3, 4, w.data(), out.data(), g.data()); },
      {"ws_backward", "d_gain requested but no gain"}));
}

// ---- batch norm ----------------------------------------------------------------------------------------

struct BnRef {
  std::vector<double> y, mean, invstd;
};
BnRef ref_bn_train(const cpu::BatchNormShape& s, const std::vector<double>& x, const std::vector<double>& w,
                   const std::vector<double>& b, double eps, std::vector<double>& rm, std::vector<double>& rv,
                   double momentum) {
  BnRef r;
  r.y.resize(x.size());
  const double M = double(s.n * s.inner);
  for (std::int64_t c = 0; c < s.c; ++c) {
    double mean = 0, var = 0;
    for (std::int64_t n = 0; n < s.n; ++n)
      for (std::int64_t k = 0; k < s.inner; ++k) mean += x[std::size_t((n * s.c + c) * s.inner + k)] / M;
    for (std::int64_t n = 0; n < s.n; ++n)
      for (std::int64_t k = 0; k < s.inner; ++k) var += std::pow(x[std::size_t((n * s.c + c) * s.inner + k)] - mean, 2);
    const double var_b = var / M, var_u = var / (M - 1);
    for (std::int64_t n = 0; n < s.n; ++n)
      for (std::int64_t k = 0; k < s.inner; ++k) {
        const std::size_t i = std::size_t((n * s.c + c) * s.inner + k);
        r.y[i] = (x[i] - mean) / std::sqrt(var_b + eps) * w[std::size_t(c)] + b[std::size_t(c)];
      }
    r.mean.push_back(mean);
    r.invstd.push_back(1.0 / std::sqrt(var_b + eps));
    rm[std::size_t(c)] = (1 - momentum) * rm[std::size_t(c)] + momentum * mean;
    rv[std::size_t(c)] = (1 - momentum) * rv[std::size_t(c)] + momentum * var_u;
  }
  return r;
}

template <typename T>
void check_bn_train_three_steps(const cpu::BatchNormShape& s, double eps, double momentum) {
  const auto w = t::random_vector(s.c, 41, 0.5, 1.5), b = t::random_vector(s.c, 42);
  std::vector<double> rm_ref(std::size_t(s.c), 0.0), rv_ref(std::size_t(s.c), 1.0);  // PyTorch's initial values
  std::vector<T> rm(std::size_t(s.c), T(0)), rv(std::size_t(s.c), T(1));
  const auto wt = t::cast_vector<T>(w), bt = t::cast_vector<T>(b);
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE(step);
    // Shifted, scaled inputs so the statistics are far from 0/1 and change between steps.
    auto x = t::random_vector(s.numel(), 50 + step, -1.0, 1.0);
    for (auto& e : x) e = 2.5 * e + 0.7 * (step + 1);
    const BnRef r = ref_bn_train(s, x, w, b, eps, rm_ref, rv_ref, momentum);
    const auto xt = t::cast_vector<T>(x);
    auto y = t::garbage<T>(s.numel());
    auto sm = t::garbage<T>(s.c), si = t::garbage<T>(s.c);
    cpu::batch_norm_forward_train<T>(s, xt.data(), wt.data(), bt.data(), T(eps), T(momentum), rm.data(), rv.data(),
                                     y.data(), sm.data(), si.data());
    EXPECT_TRUE(t::close_to_reference(y, r.y)) << "y";
    EXPECT_TRUE(t::close_to_reference(sm, r.mean)) << "save_mean";
    EXPECT_TRUE(t::close_to_reference(si, r.invstd)) << "save_invstd";
    EXPECT_TRUE(t::close_to_reference(rm, rm_ref)) << "running_mean";
    EXPECT_TRUE(t::close_to_reference(rv, rv_ref)) << "running_var";
  }
  // The running statistics really moved away from their initial values.
  EXPECT_GT(std::fabs(rm_ref[0]), 1e-3);
  EXPECT_GT(std::fabs(rv_ref[0] - 1.0), 1e-3);
}

TYPED_TEST(CpuConvBlockTyped, BatchNorm2dTrainThreeStepsPyTorchDefaults) {
  check_bn_train_three_steps<TypeParam>({3, 4, 5 * 6}, 1e-5, 0.1);
}
TYPED_TEST(CpuConvBlockTyped, BatchNorm2dTrainThreeStepsTfDefaults) {
  check_bn_train_three_steps<TypeParam>({2, 3, 7 * 3}, 1e-3, 0.01);
}
TYPED_TEST(CpuConvBlockTyped, BatchNorm1dTrainThreeSteps) { check_bn_train_three_steps<TypeParam>({8, 6, 1}, 1e-5, 0.1); }

TYPED_TEST(CpuConvBlockTyped, BatchNormEvalAndFusedActivation) {
  using T = TypeParam;
  const cpu::BatchNormShape s{2, 3, 10};
  const auto x = t::random_vector(s.numel(), 61, -2, 2), w = t::random_vector(3, 62, 0.5, 1.5),
             b = t::random_vector(3, 63), rm = t::random_vector(3, 64), rv = t::random_vector(3, 65, 0.2, 2.0);
  const double eps = 1e-3;
  std::vector<double> want(x.size());
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t c = 0; c < s.c; ++c)
      for (std::int64_t k = 0; k < s.inner; ++k) {
        const std::size_t i = std::size_t((n * s.c + c) * s.inner + k), ci = std::size_t(c);
        want[i] = (x[i] - rm[ci]) / std::sqrt(rv[ci] + eps) * w[ci] + b[ci];
      }
  const auto xt = t::cast_vector<T>(x), wt = t::cast_vector<T>(w), bt = t::cast_vector<T>(b),
             rmt = t::cast_vector<T>(rm), rvt = t::cast_vector<T>(rv);
  auto y = t::garbage<T>(s.numel());
  cpu::batch_norm_forward_eval<T>(s, xt.data(), wt.data(), bt.data(), T(eps), rmt.data(), rvt.data(), y.data());
  EXPECT_TRUE(t::close_to_reference(y, want));
  // Fused BN + SiLU = SiLU(BN(x)), eval and train, and in place.
  for (Activation act : {Activation::SiLU, Activation::ReLU, Activation::GELU}) {
    SCOPED_TRACE(cpu::activation_name(act));
    std::vector<double> want_act(want.size());
    for (std::size_t i = 0; i < want.size(); ++i) want_act[i] = arclight::kernels::activation_apply(act, want[i]);
    auto ya = xt;  // in place: y aliases x
    cpu::batch_norm_forward_eval<T>(s, ya.data(), wt.data(), bt.data(), T(eps), rmt.data(), rvt.data(), ya.data(),
                                    act);
    EXPECT_TRUE(t::close_to_reference(ya, want_act));
    auto y_plain = t::garbage<T>(s.numel()), y_fused = t::garbage<T>(s.numel());
    std::vector<T> rm1(3, T(0)), rv1(3, T(1)), rm2(3, T(0)), rv2(3, T(1));
    cpu::batch_norm_forward_train<T>(s, xt.data(), wt.data(), bt.data(), T(eps), T(0.1), rm1.data(), rv1.data(),
                                     y_plain.data(), nullptr, nullptr);
    cpu::activation_forward<T>(act, y_plain.data(), y_plain.data(), s.numel());
    cpu::batch_norm_forward_train<T>(s, xt.data(), wt.data(), bt.data(), T(eps), T(0.1), rm2.data(), rv2.data(),
                                     y_fused.data(), nullptr, nullptr, act);
    EXPECT_TRUE(t::close_to_reference(y_fused, std::vector<double>(y_plain.begin(), y_plain.end())));
  }
}

TEST(CpuBatchNormErrors, BadArguments) {
  std::vector<float> x(16, 1.f), y(16), rm(4, 0.f), rv(4, 1.f);
  EXPECT_TRUE(t::throws_with(
      [&] {
        cpu::batch_norm_forward_train<float>({1, 4, 1}, x.data(), nullptr, nullptr, 1e-5f, 0.1f, rm.data(), rv.data(),
                                             y.data(), nullptr, nullptr);
      },
      {"batch_norm_forward_train", "more than 1 value per channel", "[1, 4, 1]"}));
  EXPECT_TRUE(t::throws_with(
      [&] {
        cpu::batch_norm_forward_train<float>({2, 4, 2}, x.data(), nullptr, nullptr, 1e-5f, 1.5f, rm.data(), rv.data(),
                                             y.data(), nullptr, nullptr);
      },
      {"batch_norm_forward_train", "momentum must be in [0, 1], got 1.5"}));
  EXPECT_TRUE(t::throws_with(
      [&] {
        cpu::batch_norm_forward_train<float>({2, 4, 2}, x.data(), nullptr, nullptr, 1e-5f, 0.1f, rm.data(), nullptr,
                                             y.data(), nullptr, nullptr);
      },
      {"running_mean and running_var must be given together"}));
  EXPECT_TRUE(t::throws_with(
      [&] {
        cpu::batch_norm_forward_eval<float>({2, 4, 2}, x.data(), nullptr, nullptr, -1e-5f, rm.data(), rv.data(),
                                            y.data());
      },
      {"batch_norm_forward_eval", "eps must be finite and >= 0"}));
  EXPECT_TRUE(t::throws_with(
      [&] {
        cpu::batch_norm_forward_eval<float>({2, 0, 2}, x.data(), nullptr, nullptr, 1e-5f, rm.data(), rv.data(),
                                            y.data());
      },
      {"batch_norm_forward_eval", "expected input sizes", "got [2, 0, 2]"}));
}

TEST(CpuBatchNormErrors, ShapeFromDims) {
  const auto s4 = cpu::make_batch_norm_shape(std::vector<std::int64_t>{2, 3, 4, 5}, 3);
  EXPECT_EQ(s4.n, 2);
  EXPECT_EQ(s4.c, 3);
  EXPECT_EQ(s4.inner, 20);
  const auto s2 = cpu::make_batch_norm_shape(std::vector<std::int64_t>{8, 512}, 512);
  EXPECT_EQ(s2.inner, 1);
  EXPECT_EQ(cpu::make_batch_norm_shape(std::vector<std::int64_t>{8, 6, 7}, 6).inner, 7);
  EXPECT_TRUE(t::throws_with([] { cpu::make_batch_norm_shape(std::vector<std::int64_t>{2, 3, 4, 5, 6}, 3); },
                             {"batch_norm", "rank 2 [N, C], 3 [N, C, L] or 4 [N, C, H, W], got rank 5"}));
  EXPECT_TRUE(t::throws_with([] { cpu::make_batch_norm_shape(std::vector<std::int64_t>{8}, 8, "batch_norm1d"); },
                             {"batch_norm1d", "got rank 1"}));
  EXPECT_TRUE(t::throws_with([] { cpu::make_batch_norm_shape(std::vector<std::int64_t>{2, 4, 5, 5}, 3); },
                             {"batch_norm", "channel mismatch: input has 4 channels (dim 1), the layer has 3"}));
  EXPECT_TRUE(t::throws_with([] { cpu::make_batch_norm_shape(std::vector<std::int64_t>{2, 3, 0, 5}, 3); },
                             {"batch_norm", "must be >= 1, got size 0 at dim 2"}));
}

// ---- activations -----------------------------------------------------------------------------------------

double ref_act(Activation a, double x) {
  switch (a) {
    case Activation::ReLU: return x > 0 ? x : 0;
    case Activation::SiLU: return x / (1 + std::exp(-x));
    case Activation::GELU: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Activation::Sigmoid: return 1 / (1 + std::exp(-x));
    default: return x;
  }
}

TYPED_TEST(CpuConvBlockTyped, ActivationsMatchFormulasAndStayFinite) {
  using T = TypeParam;
  auto x = t::random_vector(200, 71, -6, 6);
  for (double e : {-1000.0, -80.0, -20.0, 0.0, 20.0, 80.0, 1000.0}) x.push_back(e);
  const auto xt = t::cast_vector<T>(x);
  for (Activation a : {Activation::ReLU, Activation::SiLU, Activation::GELU, Activation::Sigmoid,
                       Activation::Identity}) {
    SCOPED_TRACE(cpu::activation_name(a));
    std::vector<double> want;
    for (double e : x) want.push_back(ref_act(a, e));
    auto y = t::garbage<T>(std::int64_t(x.size()));
    cpu::activation_forward<T>(a, xt.data(), y.data(), std::int64_t(x.size()));
    EXPECT_TRUE(t::all_close(y, want, std::is_same_v<T, float> ? 1e-6 : 1e-14, std::is_same_v<T, float> ? 1e-6 : 1e-14));
    // Backward at the extremes is finite (no inf * 0).
    std::vector<T> dy(x.size(), T(1));
    auto dx = t::garbage<T>(std::int64_t(x.size()));
    cpu::activation_backward<T>(a, xt.data(), dy.data(), dx.data(), std::int64_t(x.size()));
    for (T v : dx) EXPECT_TRUE(std::isfinite(double(v)));
  }
}

TYPED_TEST(CpuConvBlockTyped, PReluForwardSharedAndPerChannel) {
  using T = TypeParam;
  const cpu::PReluShape shared{2, 3, 4, 1}, per_channel{2, 3, 4, 3};
  const auto x = t::random_vector(24, 81, -2, 2), a = t::random_vector(3, 82, 0.05, 0.5);
  const auto xt = t::cast_vector<T>(x), at = t::cast_vector<T>(a);
  for (const auto& s : {shared, per_channel}) {
    std::vector<double> want(x.size());
    for (std::int64_t n = 0; n < 2; ++n)
      for (std::int64_t c = 0; c < 3; ++c)
        for (std::int64_t k = 0; k < 4; ++k) {
          const std::size_t i = std::size_t((n * 3 + c) * 4 + k);
          const double slope = a[std::size_t(s.num_weights == 1 ? 0 : c)];
          want[i] = x[i] > 0 ? x[i] : slope * x[i];
        }
    auto y = t::garbage<T>(24);
    cpu::prelu_forward<T>(s, xt.data(), at.data(), y.data());
    EXPECT_TRUE(t::close_to_reference(y, want));
  }
}

TEST(CpuActivationErrors, PReluShapeFromDims) {
  const auto s = cpu::make_prelu_shape(std::vector<std::int64_t>{4, 3, 5, 6}, 3);
  EXPECT_EQ(s.n, 4);
  EXPECT_EQ(s.c, 3);
  EXPECT_EQ(s.inner, 30);
  const auto s1 = cpu::make_prelu_shape(std::vector<std::int64_t>{7}, 1);
  EXPECT_EQ(s1.n * s1.c * s1.inner, 7);
  EXPECT_TRUE(t::throws_with([] { cpu::make_prelu_shape(std::vector<std::int64_t>{32, 512}, 256); },
                             {"prelu", "weight has 256 elements, expected 1 or the number of channels (512)"}));
  EXPECT_TRUE(t::throws_with([] { cpu::make_prelu_shape(std::vector<std::int64_t>{7}, 7); },
                             {"prelu", "a rank-1 input takes a single weight, got 7"}));
  EXPECT_TRUE(t::throws_with([] { cpu::make_prelu_shape(std::vector<std::int64_t>{}, 1); },
                             {"prelu", "rank >= 1"}));
}

TEST(CpuActivationErrors, BadArguments) {
  std::vector<float> x(8, 1.f), w(2, 0.25f);
  EXPECT_TRUE(t::throws_with([&] { cpu::prelu_forward<float>({2, 4, 1, 2}, x.data(), w.data(), x.data()); },
                             {"prelu_forward", "weight has 2 elements, expected 1 or the number of channels (4)"}));
  EXPECT_TRUE(t::throws_with(
      [&] { cpu::activation_forward<float>(static_cast<Activation>(42), x.data(), x.data(), 8); },
      {"activation_forward", "unknown activation id 42"}));
  EXPECT_TRUE(t::throws_with([&] { cpu::activation_forward<float>(Activation::ReLU, x.data(), x.data(), -1); },
                             {"activation_forward", "element count must be >= 0, got -1"}));
}

// ---- pooling ------------------------------------------------------------------------------------------

// Torch's avg-pool definition written over the padded window: a tap counts toward the "include pad" divisor
// when it lies in [-pad, size + pad), and toward the sum (and the other divisor) when it lies in the input.
std::vector<double> ref_avg_pool(const arclight::kernels::Pool2dShape& s, const std::vector<double>& x, bool cip) {
  std::vector<double> y(std::size_t(s.output_numel()));
  for (std::int64_t p = 0; p < s.n * s.c; ++p)
    for (std::int64_t oh = 0; oh < s.out_h; ++oh)
      for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
        double sum = 0;
        std::int64_t in_input = 0, in_padded = 0;
        for (std::int64_t i = 0; i < s.kh; ++i)
          for (std::int64_t j = 0; j < s.kw; ++j) {
            const std::int64_t ih = oh * s.stride_h - s.pad_h + i, iw = ow * s.stride_w - s.pad_w + j;
            if (ih < s.h + s.pad_h && iw < s.w + s.pad_w) ++in_padded;
            if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w) {
              ++in_input;
              sum += x[std::size_t((p * s.h + ih) * s.w + iw)];
            }
          }
        y[std::size_t((p * s.out_h + oh) * s.out_w + ow)] = sum / double(cip ? in_padded : in_input);
      }
  return y;
}

TEST(CpuPooling, AvgPoolHandValuesCeilMode) {
  // 3x3 input 1..9, k 2, stride 2, ceil_mode: windows {1,2,4,5}, {3,6}, {7,8}, {9} (timm's DownsampleAvg).
  const std::vector<double> x = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const auto s = cpu::make_pool2d_shape(std::array<std::int64_t, 4>{1, 1, 3, 3}, 2, 2, 2, 2, 0, 0, true);
  ASSERT_EQ(s.out_h, 2);
  ASSERT_EQ(s.out_w, 2);
  for (bool cip : {false, true}) {  // without padding torch clips the window to the input either way
    auto y = t::garbage<double>(4);
    cpu::avg_pool2d_forward(s, x.data(), y.data(), cip);
    EXPECT_TRUE(t::all_close(y, {3.0, 4.5, 7.5, 9.0}, 1e-15, 0));
  }
  const auto floor_s = cpu::make_pool2d_shape(std::array<std::int64_t, 4>{1, 1, 3, 3}, 2, 2, 2, 2, 0, 0, false);
  EXPECT_EQ(floor_s.out_h, 1);
  // k 3, stride 2, pad 1 on 3x3 with count_include_pad: the corner window holds 4 inputs over 9 taps.
  const auto sp = cpu::make_pool2d_shape(std::array<std::int64_t, 4>{1, 1, 3, 3}, 3, 3, 2, 2, 1, 1, false);
  auto y = t::garbage<double>(sp.output_numel());
  cpu::avg_pool2d_forward(sp, x.data(), y.data(), true);
  EXPECT_DOUBLE_EQ(y[0], (1 + 2 + 4 + 5) / 9.0);
  cpu::avg_pool2d_forward(sp, x.data(), y.data(), false);
  EXPECT_DOUBLE_EQ(y[0], (1 + 2 + 4 + 5) / 4.0);
}

TYPED_TEST(CpuConvBlockTyped, AvgPoolMatchesReference) {
  using T = TypeParam;
  struct P {
    std::int64_t h, w, k, s, pad;
    bool ceil;
  };
  for (const P& p : {P{7, 6, 3, 2, 1, false}, P{7, 6, 3, 2, 1, true}, P{8, 8, 2, 2, 0, false}, P{5, 7, 2, 2, 0, true},
                     P{6, 5, 3, 1, 1, false}, P{9, 9, 4, 3, 2, true}}) {
    const auto s = cpu::make_pool2d_shape(std::array<std::int64_t, 4>{2, 3, p.h, p.w}, p.k, p.k, p.s, p.s, p.pad,
                                          p.pad, p.ceil);
    const auto x = t::random_vector(s.input_numel(), 91);
    const auto xt = t::cast_vector<T>(x);
    for (bool cip : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "h " << p.h << " k " << p.k << " s " << p.s << " pad " << p.pad << " ceil "
                                        << p.ceil << " cip " << cip);
      auto y = t::garbage<T>(s.output_numel());
      cpu::avg_pool2d_forward<T>(s, xt.data(), y.data(), cip);
      EXPECT_TRUE(t::close_to_reference(y, ref_avg_pool(s, x, cip)));
    }
  }
}

TYPED_TEST(CpuConvBlockTyped, MaxPoolValuesIndicesAndBackward) {
  using T = TypeParam;
  const auto s = cpu::make_pool2d_shape(std::array<std::int64_t, 4>{2, 2, 7, 6}, 3, 3, 2, 2, 1, 1, true);
  const auto x = t::random_vector(s.input_numel(), 101);
  const auto xt = t::cast_vector<T>(x);
  auto y = t::garbage<T>(s.output_numel());
  std::vector<std::int64_t> idx(std::size_t(s.output_numel()), -7);
  cpu::max_pool2d_forward<T>(s, xt.data(), y.data(), idx.data());
  std::vector<double> want(y.size());
  std::vector<std::int64_t> want_idx(y.size());
  for (std::int64_t p = 0; p < s.n * s.c; ++p)
    for (std::int64_t oh = 0; oh < s.out_h; ++oh)
      for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
        double best = -1e300;
        std::int64_t bi = -1;
        for (std::int64_t i = 0; i < 3; ++i)
          for (std::int64_t j = 0; j < 3; ++j) {
            const std::int64_t ih = oh * 2 - 1 + i, iw = ow * 2 - 1 + j;
            if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
            const double v = x[std::size_t((p * s.h + ih) * s.w + iw)];
            if (v > best) best = v, bi = ih * s.w + iw;
          }
        want[std::size_t((p * s.out_h + oh) * s.out_w + ow)] = best;
        want_idx[std::size_t((p * s.out_h + oh) * s.out_w + ow)] = bi;
      }
  EXPECT_TRUE(t::close_to_reference(y, want));
  EXPECT_EQ(idx, want_idx);
  // Backward: dy lands on the argmax positions (summed where windows share one).
  const auto dy = t::random_vector(s.output_numel(), 102);
  const auto dyt = t::cast_vector<T>(dy);
  std::vector<double> dx_want(std::size_t(s.input_numel()), 0.0);
  for (std::int64_t p = 0; p < s.n * s.c; ++p)
    for (std::int64_t o = 0; o < s.out_h * s.out_w; ++o)
      dx_want[std::size_t(p * s.h * s.w + want_idx[std::size_t(p * s.out_h * s.out_w + o)])] +=
          dy[std::size_t(p * s.out_h * s.out_w + o)];
  auto dx = t::garbage<T>(s.input_numel());
  cpu::max_pool2d_backward<T>(s, dyt.data(), idx.data(), dx.data());
  EXPECT_TRUE(t::close_to_reference(dx, dx_want));
}

TEST(CpuPooling, MaxPoolPropagatesNaNAndRejectsBadIndices) {
  std::vector<double> x = {1, 2, 3, 4, std::numeric_limits<double>::quiet_NaN(), 6, 7, 8, 9};
  const auto s = cpu::make_pool2d_shape(std::array<std::int64_t, 4>{1, 1, 3, 3}, 2, 2, 1, 1, 0, 0, false);
  std::vector<double> y(4);
  std::vector<std::int64_t> idx(4);
  cpu::max_pool2d_forward(s, x.data(), y.data(), idx.data());
  for (int k = 0; k < 4; ++k) EXPECT_TRUE(std::isnan(y[std::size_t(k)]));  // every 2x2 window holds the centre
  EXPECT_EQ(idx[0], 4);
  std::vector<std::int64_t> bad = {0, 9, 1, 2};
  std::vector<double> dy(4, 1.0), dx(9);
  EXPECT_TRUE(t::throws_with([&] { cpu::max_pool2d_backward(s, dy.data(), bad.data(), dx.data()); },
                             {"max_pool2d_backward", "outside the 3x3 input plane"}));
}

TEST(CpuPooling, GlobalAvgPoolAndErrors) {
  const auto x = t::random_vector(2 * 3 * 10, 111);
  std::vector<double> want(6, 0.0);
  for (int p = 0; p < 6; ++p)
    for (int k = 0; k < 10; ++k) want[std::size_t(p)] += x[std::size_t(p * 10 + k)] / 10.0;
  auto y = t::garbage<float>(6);
  const auto xf = t::cast_vector<float>(x);
  cpu::global_avg_pool_forward<float>(2, 3, 10, xf.data(), y.data());
  EXPECT_TRUE(t::close_to_reference(y, want));
  const std::array<std::int64_t, 4> in{1, 1, 4, 4};
  EXPECT_TRUE(t::throws_with([&] { cpu::make_pool2d_shape(in, 3, 3, 1, 1, 2, 2, false); },
                             {"pool2d", "padding must be between 0 and half the kernel size", "pad (2, 2)"}));
  EXPECT_TRUE(t::throws_with([&] { cpu::make_pool2d_shape(in, 5, 5, 1, 1, 0, 0, false, "avg_pool2d"); },
                             {"avg_pool2d", "output size must be positive"}));
  EXPECT_TRUE(t::throws_with([&] { cpu::make_pool2d_shape(std::array<std::int64_t, 3>{1, 4, 4}, 2, 2, 2, 2, 0, 0, false); },
                             {"pool2d", "rank 4", "got rank 3"}));
  std::vector<float> buf(4);
  EXPECT_TRUE(t::throws_with([&] { cpu::global_avg_pool_forward<float>(1, 1, 0, buf.data(), buf.data()); },
                             {"global_avg_pool_forward", "h*w >= 1"}));
}

// ---- squeeze-excite scaling ---------------------------------------------------------------------------

TYPED_TEST(CpuConvBlockTyped, SeScaleForward) {
  using T = TypeParam;
  const auto x = t::random_vector(2 * 3 * 5, 121), g = t::random_vector(6, 122, 0, 1);
  std::vector<double> want(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) want[i] = x[i] * g[i / 5];
  const auto xt = t::cast_vector<T>(x), gt = t::cast_vector<T>(g);
  auto y = t::garbage<T>(30);
  cpu::se_scale_forward<T>(2, 3, 5, xt.data(), gt.data(), y.data());
  EXPECT_TRUE(t::close_to_reference(y, want));
  EXPECT_TRUE(t::throws_with([&] { cpu::se_scale_forward<T>(2, -3, 5, xt.data(), gt.data(), y.data()); },
                             {"se_scale_forward", "sizes must be >= 0", "c -3"}));
}

}  // namespace
