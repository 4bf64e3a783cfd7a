// Unit tests of the conv-block ops (include/arclight/ops/{conv2d, batch_norm, activation, pooling,
// dropout}.hpp): forward values against slow obvious references (a direct convolution loop, batch norm from
// generic reductions, the scalar formulas), gradients against the autograd of those references, in-place
// running-statistics updates, mask semantics of dropout/drop_path, outputs written over recycled NaN memory,
// and bad input (wrong ranks, channel mismatch, groups not dividing, ...) with the message checked.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "layers_util.hpp"

namespace {

using arclight::DType;
using arclight::Generator;
using arclight::Tensor;
using namespace arclight::ops;
using arclight::layers_test::conv2d_reference;
using arclight::layers_test::leaf_from;
using arclight::layers_test::uniform;
using arclight::testing::all_close;
using arclight::testing::leaf;

// Frees a few NaN-filled blocks of `nbytes` into the caching allocator, so the next empty() of that size
// most likely hands back NaN memory: an op that reads its output before writing it leaves NaN behind.
void poison_allocator(std::size_t nbytes) {
  std::vector<Tensor> blocks;
  for (int i = 0; i < 4; ++i)
    blocks.push_back(arclight::full({std::int64_t(nbytes / 4 + 1)}, std::numeric_limits<double>::quiet_NaN(), DType::f32));
}

bool all_finite(const Tensor& t) {
  for (double v : t.to_vector<double>())
    if (!std::isfinite(v)) return false;
  return true;
}

// ---- conv2d ----------------------------------------------------------------------------------------

struct ConvCase {
  const char* name;
  arclight::Shape x, w;
  bool bias;
  Conv2dParams p;
};

std::vector<ConvCase> conv_cases() {
  Conv2dParams asym = conv2d_params(1, 0);
  asym.pad_top = 2, asym.pad_bottom = 0, asym.pad_left = 1, asym.pad_right = 3, asym.stride_h = 2;
  return {
      {"3x3_pad1", {2, 3, 9, 8}, {5, 3, 3, 3}, true, conv2d_params(1, 1)},
      {"3x3_s2_nobias", {2, 3, 9, 8}, {4, 3, 3, 3}, false, conv2d_params(2, 1)},
      {"dilation2", {1, 4, 9, 9}, {3, 4, 3, 3}, true, conv2d_params(1, 2, 2)},
      {"groups4", {2, 8, 6, 6}, {8, 2, 3, 3}, true, conv2d_params(1, 1, 1, 4)},
      {"depthwise_k3", {2, 6, 10, 9}, {6, 1, 3, 3}, true, conv2d_params(1, 1, 1, 6)},
      {"depthwise_k5_s2_mult2", {2, 3, 11, 10}, {6, 1, 5, 5}, false, conv2d_params(2, 2, 1, 3)},
      {"depthwise_k7_s1", {1, 4, 12, 12}, {4, 1, 7, 7}, true, conv2d_params(1, 3, 1, 4)},
      {"same_s2_even", {1, 3, 8, 10}, {4, 3, 3, 3}, true, conv2d_params_same(2)},
      {"same_s2_depthwise_k5", {2, 4, 9, 8}, {4, 1, 5, 5}, false, conv2d_params_same(2, 1, 4)},
      {"same_s1_dilated", {1, 2, 7, 7}, {2, 2, 3, 3}, true, conv2d_params_same(1, 2)},
      {"1x1", {3, 6, 5, 4}, {7, 6, 1, 1}, true, conv2d_params(1, 0)},
      {"1x1_grouped", {2, 6, 4, 4}, {9, 2, 1, 1}, true, conv2d_params(1, 0, 1, 3)},
      {"1x1_s2", {2, 6, 5, 5}, {4, 6, 1, 1}, false, conv2d_params(2, 0)},
      {"asymmetric", {1, 2, 7, 8}, {3, 2, 3, 2}, true, asym},
  };
}

TEST(Conv2dOp, MatchesDirectConvolutionInF64AndF32) {
  std::uint64_t seed = 1;
  for (const auto& c : conv_cases()) {
    const Tensor x = uniform(c.x, seed++), w = uniform(c.w, seed++);
    const Tensor b = c.bias ? uniform({c.w[0]}, seed++) : Tensor();
    const Tensor ref = conv2d_reference(x, w, b, c.p);
    EXPECT_TRUE(all_close(conv2d(x, w, b, c.p), ref, 1e-12, 1e-12)) << c.name << " f64";
    const Tensor x32 = to(x, DType::f32), w32 = to(w, DType::f32), b32 = c.bias ? to(b, DType::f32) : Tensor();
    poison_allocator(std::size_t(ref.numel()) * 4);
    const Tensor y32 = conv2d(x32, w32, b32, c.p);
    EXPECT_EQ(y32.dtype(), DType::f32);
    EXPECT_TRUE(all_close(y32, ref, 1e-4, 1e-5)) << c.name << " f32";
  }
}

TEST(Conv2dOp, SameOutputSizeIsCeilOfInputOverStride) {
  for (std::int64_t h : {7, 8, 9, 10}) {
    for (std::int64_t stride : {1, 2, 3}) {
      const Tensor y = conv2d(uniform({1, 2, h, h + 1}, 5), uniform({3, 2, 5, 5}, 6), Tensor(), conv2d_params_same(stride));
      EXPECT_EQ(y.shape()[2], (h + stride - 1) / stride) << h << " / " << stride;
      EXPECT_EQ(y.shape()[3], (h + stride) / stride) << h + 1 << " / " << stride;
    }
  }
}

TEST(Conv2dOp, GradientsMatchAutogradOfTheReferenceOnALargerGroupedConv) {
  // Larger than the gradcheck shapes so the GEMM paths see real sizes; reference = the direct conv of the
  // same values in f64, differentiated by linearity: dL/dx and dL/dw of L = Σ r·y equal the op's adjoints.
  const Conv2dParams p = conv2d_params(2, 1, 1, 2);
  const Tensor x = leaf({3, 8, 13, 12}, 21), w = leaf({6, 4, 3, 3}, 22), b = leaf({6}, 23);
  const Tensor y = conv2d(x, w, b, p);
  const Tensor r = uniform(y.shape(), 24);
  sum(mul(y, r)).backward();
  // Finite differences on a few random elements (the full gradcheck runs on small shapes).
  arclight::NoGradGuard ng;
  auto loss = [&]() { return sum(mul(conv2d_reference(x, w, b, p), r)).item(); };
  auto probe = [&](const Tensor& t, std::int64_t i) {
    double* d = t.data_ptr<double>();
    const double orig = d[i], h = 1e-6;
    d[i] = orig + h;
    const double lp = loss();
    d[i] = orig - h;
    const double lm = loss();
    d[i] = orig;
    return (lp - lm) / (2 * h);
  };
  const auto gx = x.grad().to_vector<double>(), gw = w.grad().to_vector<double>(), gb = b.grad().to_vector<double>();
  for (std::int64_t i : {0L, 77L, 1000L, 3743L}) EXPECT_NEAR(gx[std::size_t(i)], probe(x, i), 1e-6) << "x " << i;
  for (std::int64_t i : {0L, 50L, 143L, 215L}) EXPECT_NEAR(gw[std::size_t(i)], probe(w, i), 1e-6) << "w " << i;
  for (std::int64_t i : {0L, 5L}) EXPECT_NEAR(gb[std::size_t(i)], probe(b, i), 1e-6) << "b " << i;
}

TEST(Conv2dOp, OnlyTheNeededGradientsAreComputed) {
  const Tensor x = uniform({1, 2, 5, 5}, 1);  // no grad
  const Tensor w = leaf({3, 2, 3, 3}, 2);
  const Tensor b = uniform({3}, 3);  // no grad
  sum(conv2d(x, w, b, conv2d_params(1, 1))).backward();
  EXPECT_TRUE(w.grad().defined());
  EXPECT_FALSE(x.grad().defined());
  // Bias alone: its gradient is the sum of dy over (n, h, w) = number of output pixels per image times N.
  const Tensor b2 = leaf({3}, 4);
  sum(conv2d(x, uniform({3, 2, 3, 3}, 5), b2, conv2d_params(1, 1))).backward();
  EXPECT_TRUE(all_close(b2.grad(), std::vector<double>{25, 25, 25}, 1e-12, 0));
}

TEST(Conv2dOp, BadInputIsRejectedWithAClearMessage) {
  const Tensor x = uniform({2, 4, 6, 6}, 1), w = uniform({6, 2, 3, 3}, 2);
  EXPECT_ERROR_WITH(conv2d(uniform({4, 6, 6}, 3), w, Tensor(), conv2d_params(1, 1, 1, 2)), "conv2d", "rank 4",
                    "got rank 3");
  EXPECT_ERROR_WITH(conv2d(x, uniform({6, 2, 3}, 3), Tensor()), "conv2d", "weight must have rank 4");
  EXPECT_ERROR_WITH(conv2d(x, w, Tensor(), conv2d_params(1, 1)), "conv2d", "channel mismatch", "has 4 channels",
                    "expects 2");
  EXPECT_ERROR_WITH(conv2d(x, uniform({6, 4, 3, 3}, 4), Tensor(), conv2d_params(1, 1, 1, 3)), "conv2d",
                    "groups (3) must divide the input channels (4)");
  EXPECT_ERROR_WITH(conv2d(x, uniform({5, 2, 3, 3}, 4), Tensor(), conv2d_params(1, 1, 1, 2)), "conv2d",
                    "groups (2) must divide the output channels (5)");
  EXPECT_ERROR_WITH(conv2d(x, w, uniform({5}, 5), conv2d_params(1, 1, 1, 2)), "conv2d", "bias has 5 elements",
                    "expected 6");
  EXPECT_ERROR_WITH(conv2d(x, to(w, DType::f32), Tensor(), conv2d_params(1, 1, 1, 2)), "conv2d", "dtype mismatch");
  EXPECT_ERROR_WITH(conv2d(x, Tensor(), Tensor()), "conv2d", "undefined");
  EXPECT_ERROR_WITH(conv2d(uniform({1, 2, 2, 2}, 6), uniform({1, 2, 5, 5}, 7), Tensor()), "conv2d",
                    "output size must be positive");
  EXPECT_ERROR_WITH(conv2d(x, w, Tensor(), conv2d_params(0, 1, 1, 2)), "conv2d", "stride must be >= 1");
  EXPECT_ERROR_WITH(conv2d(arclight::zeros({2, 4, 6, 6}, DType::i64), w, Tensor()), "conv2d", "f32 or f64");
}

// ---- scaled weight standardisation ---------------------------------------------------------------

TEST(ScaledStdWeight, MatchesTheFormulaPerOutputChannel) {
  const Tensor w = uniform({5, 3, 3, 3}, 31, -2.0, 3.0), gain = uniform({5, 1, 1, 1}, 32, 0.5, 1.5);
  const double gamma = 1.7881293296813965, eps = 27e-4;
  const Tensor w_hat = scaled_std_weight(w, gain, gamma, eps);
  const auto wv = w.to_vector<double>(), gv = gain.to_vector<double>();
  std::vector<double> expect(wv.size());
  for (std::size_t o = 0; o < 5; ++o) {
    double mean = 0, ss = 0;
    for (std::size_t k = 0; k < 27; ++k) mean += wv[o * 27 + k] / 27.0;
    for (std::size_t k = 0; k < 27; ++k) ss += (wv[o * 27 + k] - mean) * (wv[o * 27 + k] - mean);
    const double var = ss / 27.0;  // biased
    for (std::size_t k = 0; k < 27; ++k)
      expect[o * 27 + k] = gv[o] * gamma * (wv[o * 27 + k] - mean) / std::sqrt(var * 27.0 + eps);
  }
  EXPECT_TRUE(all_close(w_hat, expect, 1e-12, 1e-14));
  EXPECT_TRUE(all_close(scaled_std_weight(to(w, DType::f32), to(gain, DType::f32), gamma, eps), expect, 1e-5, 1e-6));
}

TEST(ScaledStdWeight, BadInput) {
  EXPECT_ERROR_WITH(scaled_std_weight(uniform({4}, 1), Tensor(), 1.0, 1e-5), "scaled_std_weight", "rank >= 2");
  EXPECT_ERROR_WITH(scaled_std_weight(uniform({4, 3}, 1), uniform({3}, 2), 1.0, 1e-5), "scaled_std_weight",
                    "gain with 4 elements", "got");
  EXPECT_ERROR_WITH(scaled_std_weight(uniform({4, 3}, 1), Tensor(), 1.0, -1.0), "scaled_std_weight",
                    "eps must be finite and >= 0");
}

// ---- batch norm ------------------------------------------------------------------------------------

TEST(BatchNormOp, TrainModeMatchesReferenceAndUpdatesRunningStatsInPlace) {
  for (const arclight::Shape& shape : {arclight::Shape{4, 3, 5, 6}, arclight::Shape{7, 3}, arclight::Shape{3, 3, 5}}) {
    Tensor x = leaf(shape, 41), w = leaf({3}, 42), b = leaf({3}, 43);
    Tensor rm = uniform({3}, 44), rv = uniform({3}, 45, 0.5, 2.0);
    const auto rm0 = rm.to_vector<double>(), rv0 = rv.to_vector<double>();
    const Tensor r = uniform(shape, 46);
    const Tensor y = batch_norm(x, w, b, rm, rv, true, 0.1, 1e-5);
    sum(mul(y, r)).backward();
    const Tensor gx = x.grad(), gw = w.grad(), gb = b.grad();
    x.zero_grad(), w.zero_grad(), b.zero_grad();
    const Tensor ref = arclight::layers_test::batch_norm_reference(x, w, b, 1e-5);
    EXPECT_TRUE(all_close(y, ref, 1e-12, 1e-12));
    sum(mul(ref, r)).backward();
    EXPECT_TRUE(all_close(gx, x.grad(), 1e-10, 1e-12));
    EXPECT_TRUE(all_close(gw, w.grad(), 1e-10, 1e-12));
    EXPECT_TRUE(all_close(gb, b.grad(), 1e-10, 1e-12));
    // running = 0.9 running + 0.1 batch, with the unbiased batch variance
    std::vector<std::int64_t> dims{0};
    for (std::int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
    const auto mean = arclight::ops::mean(x.detach(), dims).to_vector<double>();
    const auto var_u = var(x.detach(), dims, 1).to_vector<double>();
    std::vector<double> erm(3), erv(3);
    for (int c = 0; c < 3; ++c) erm[c] = 0.9 * rm0[c] + 0.1 * mean[c], erv[c] = 0.9 * rv0[c] + 0.1 * var_u[c];
    EXPECT_TRUE(all_close(rm, erm, 1e-12, 1e-14));
    EXPECT_TRUE(all_close(rv, erv, 1e-12, 1e-14));
  }
}

TEST(BatchNormOp, EvalModeUsesRunningStatsAndLeavesThemAlone) {
  const Tensor x = uniform({2, 3, 4, 4}, 51), w = uniform({3}, 52), b = uniform({3}, 53);
  const Tensor rm = uniform({3}, 54), rv = uniform({3}, 55, 0.5, 2.0);
  const auto rmv = rm.to_vector<double>(), rvv = rv.to_vector<double>(), wv = w.to_vector<double>(),
             bv = b.to_vector<double>(), xv = x.to_vector<double>();
  poison_allocator(x.numel() * 8);
  const Tensor y = batch_norm(x, w, b, rm, rv, false, 0.1, 1e-3, Activation::ReLU);
  std::vector<double> expect(xv.size());
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const std::size_t c = (i / 16) % 3;
    expect[i] = std::max(0.0, (xv[i] - rmv[c]) / std::sqrt(rvv[c] + 1e-3) * wv[c] + bv[c]);
  }
  EXPECT_TRUE(all_close(y, expect, 1e-12, 1e-14));
  EXPECT_EQ(rm.to_vector<double>(), rmv);
  EXPECT_EQ(rv.to_vector<double>(), rvv);
}

TEST(BatchNormOp, EvalBackwardUsesTheStatisticsOfItsForward) {
  const Tensor x = leaf({2, 2, 3, 3}, 61);
  Tensor rm = uniform({2}, 62), rv = uniform({2}, 63, 0.5, 2.0);
  const auto rvv = rv.to_vector<double>();
  const Tensor y = batch_norm(x, Tensor(), Tensor(), rm, rv, false, 0.1, 1e-5);
  // A training step on other data changes the buffers before the backward runs.
  batch_norm(uniform({4, 2, 3, 3}, 64, 5.0, 9.0), Tensor(), Tensor(), rm, rv, true, 0.5, 1e-5);
  EXPECT_NE(rv.to_vector<double>(), rvv);
  sum(y).backward();
  const auto gx = x.grad().to_vector<double>();
  for (std::size_t i = 0; i < gx.size(); ++i) EXPECT_NEAR(gx[i], 1.0 / std::sqrt(rvv[(i / 9) % 2] + 1e-5), 1e-12);
}

TEST(BatchNormOp, BadInput) {
  const Tensor x = uniform({2, 3, 4, 4}, 1), w = uniform({3}, 2), rm = uniform({3}, 3), rv = uniform({3}, 4, 0.5, 1);
  EXPECT_ERROR_WITH(batch_norm(x, uniform({4}, 5), Tensor(), rm, rv, true, 0.1, 1e-5), "batch_norm",
                    "channel mismatch", "input has 3 channels", "the layer has 4");
  EXPECT_ERROR_WITH(batch_norm(uniform({2, 3, 2, 2, 2}, 6), w, Tensor(), rm, rv, true, 0.1, 1e-5), "batch_norm",
                    "rank 2", "got rank 5");
  EXPECT_ERROR_WITH(batch_norm(uniform({1, 3}, 7), w, Tensor(), rm, rv, true, 0.1, 1e-5), "batch_norm",
                    "more than 1 value per channel");
  EXPECT_ERROR_WITH(batch_norm(x, w, Tensor(), rm, Tensor(), true, 0.1, 1e-5), "batch_norm", "together");
  EXPECT_ERROR_WITH(batch_norm(x, w, Tensor(), rm, rv, true, 1.5, 1e-5), "batch_norm", "momentum must be in [0, 1]");
  EXPECT_ERROR_WITH(batch_norm(x, w, uniform({2}, 8), rm, rv, true, 0.1, 1e-5), "batch_norm", "bias with 3 elements");
  EXPECT_ERROR_WITH(batch_norm(x, w, Tensor(), leaf({3}, 9), rv, true, 0.1, 1e-5), "batch_norm", "must not require grad");
  // Eval with one value per channel is fine (running statistics).
  EXPECT_NO_THROW(batch_norm(uniform({1, 3}, 10), w, Tensor(), rm, rv, false, 0.1, 1e-5));
}

// ---- activations -----------------------------------------------------------------------------------

TEST(ActivationOps, MatchScalarFormulasIncludingExtremes) {
  std::vector<double> v{-100.0, -20.0, -3.5, -1.0, -0.25, 0.0, 1e-3, 0.7, 2.0, 20.0, 100.0};
  const Tensor x = arclight::from_vector(v, {11}, DType::f64);
  const Tensor x32 = to(x, DType::f32);
  auto expect = [&](auto f) {
    std::vector<double> e;
    for (double t : v) e.push_back(f(t));
    return e;
  };
  const auto sig = [](double t) { return 1.0 / (1.0 + std::exp(-t)); };
  const auto e_relu = expect([](double t) { return t > 0 ? t : 0.0; });
  const auto e_silu = expect([&](double t) { return t * sig(t); });
  // x·Φ(x) with Φ(x) = ½·erfc(−x/√2): relative-accurate in the negative tail (no 1 + erf cancellation)
  const auto e_gelu = expect([](double t) { return 0.5 * t * std::erfc(-t / std::sqrt(2.0)); });
  const auto e_sig = expect(sig);
  EXPECT_TRUE(all_close(relu(x), e_relu, 0, 0));
  EXPECT_TRUE(all_close(silu(x), e_silu, 1e-14, 1e-300));
  // erfc's tail amplifies a 1-ulp difference of its argument (x/√2 vs x·(1/√2)) by ~x² relative: 1e-12 at |x| = 20
  EXPECT_TRUE(all_close(gelu(x), e_gelu, 1e-12, 1e-300));
  EXPECT_TRUE(all_close(sigmoid(x), e_sig, 1e-14, 1e-300));
  EXPECT_TRUE(all_close(silu(x32), e_silu, 1e-6, 1e-30));
  // float GELU evaluates ½·erfc(−x/√2) too, so its error stays relative in the tail (values below float's
  // range flush to 0, hence the tiny absolute floor).
  EXPECT_TRUE(all_close(gelu(x32), e_gelu, 1e-5, 1e-30));
  EXPECT_TRUE(all_close(sigmoid(x32), e_sig, 1e-6, 1e-38));
  EXPECT_TRUE(activation(x, Activation::Identity).is_same(x));
}

TEST(ActivationOps, PReluSharedAndPerChannel) {
  const Tensor x = uniform({2, 3, 2, 2}, 71, -2.0, 2.0);
  const auto xv = x.to_vector<double>();
  const Tensor a3 = arclight::from_vector(std::vector<double>{0.1, -0.2, 0.5}, {3}, DType::f64);
  std::vector<double> e1, e3;
  for (std::size_t i = 0; i < xv.size(); ++i) {
    e1.push_back(xv[i] > 0 ? xv[i] : 0.25 * xv[i]);
    e3.push_back(xv[i] > 0 ? xv[i] : std::vector<double>{0.1, -0.2, 0.5}[(i / 4) % 3] * xv[i]);
  }
  EXPECT_TRUE(all_close(prelu(x, arclight::full({1}, 0.25, DType::f64)), e1, 0, 0));
  EXPECT_TRUE(all_close(prelu(x, a3), e3, 0, 0));
  EXPECT_ERROR_WITH(prelu(x, uniform({2}, 72)), "prelu", "weight has 2 elements", "expected 1 or the number of channels (3)");
  EXPECT_ERROR_WITH(prelu(x, arclight::full({3}, 0.25, DType::f32)), "prelu", "dtype mismatch");
}

TEST(ActivationOps, SeScaleAndItsBadInput) {
  const Tensor x = uniform({2, 3, 2, 2}, 81), g = uniform({2, 3}, 82);
  const auto xv = x.to_vector<double>(), gv = g.to_vector<double>();
  std::vector<double> e;
  for (std::size_t i = 0; i < xv.size(); ++i) e.push_back(xv[i] * gv[i / 4]);
  EXPECT_TRUE(all_close(se_scale(x, g), e, 0, 0));
  EXPECT_TRUE(all_close(se_scale(x, reshape(g, {2, 3, 1, 1})), e, 0, 0));
  EXPECT_ERROR_WITH(se_scale(x, uniform({3, 2}, 83)), "se_scale", "expected a gate of shape [2, 3]");
  EXPECT_ERROR_WITH(se_scale(x, uniform({2, 3, 2, 1}, 84)), "se_scale", "expected a gate of shape");
  EXPECT_ERROR_WITH(se_scale(uniform({6}, 85), g), "se_scale", "rank >= 2");
}

// ---- pooling -----------------------------------------------------------------------------------------

TEST(PoolingOps, HandComputedWindows) {
  // 1..9 in a 3x3 plane.
  const Tensor x = arclight::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3}, DType::f64);
  // NFNet's DownsampleAvg: k2 s2 ceil_mode, count_include_pad=false -> the edge windows average what they hold.
  EXPECT_TRUE(all_close(avg_pool2d(x, 2, 2, 0, true, false), std::vector<double>{3, 4.5, 7.5, 9}, 1e-15, 0));
  // k3 s1 p1, counting the pad: corner = (1+2+4+5)/9.
  const Tensor a = avg_pool2d(x, 3, 1, 1, false, true);
  EXPECT_NEAR(a.to_vector<double>()[0], 12.0 / 9.0, 1e-15);
  EXPECT_NEAR(a.to_vector<double>()[4], 5.0, 1e-15);
  EXPECT_NEAR(avg_pool2d(x, 3, 1, 1, false, false).to_vector<double>()[0], 3.0, 1e-15);
  EXPECT_TRUE(all_close(max_pool2d(x, 2, 1), std::vector<double>{5, 6, 8, 9}, 0, 0));
  EXPECT_TRUE(all_close(max_pool2d(x, 3, 2, 1), std::vector<double>{5, 6, 8, 9}, 0, 0));
  EXPECT_TRUE(all_close(global_avg_pool(x), std::vector<double>{5}, 1e-15, 0));
  EXPECT_EQ(global_avg_pool(uniform({2, 3, 4, 5}, 1)).shape(), (arclight::Shape{2, 3, 1, 1}));
  EXPECT_EQ(adaptive_avg_pool2d(uniform({2, 3, 4, 5}, 1), 1).shape(), (arclight::Shape{2, 3, 1, 1}));
}

TEST(PoolingOps, MaxPoolPropagatesNanAndRoutesGradientToTheArgmax) {
  Tensor x = leaf_from({1, 9, 3, 4, 2, 8, 7, 6, 5, 0, 0, 0, 0, 0, 0, 0}, {1, 1, 4, 4});
  const Tensor y = max_pool2d(x, 2, 2);
  EXPECT_TRUE(all_close(y, std::vector<double>{9, 7, 5, 0}, 0, 0));
  sum(y).backward();
  // ties (the all-zero window) go to the first element in row-major order, as torch
  EXPECT_TRUE(all_close(x.grad(), std::vector<double>{0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0}, 0, 0));
  const Tensor xn = arclight::from_vector(std::vector<double>{1, std::nan(""), 3, 4}, {1, 1, 2, 2}, DType::f64);
  EXPECT_TRUE(std::isnan(max_pool2d(xn, 2).item()));
}

TEST(PoolingOps, BadInput) {
  EXPECT_ERROR_WITH(avg_pool2d(uniform({3, 4, 4}, 1), 2), "avg_pool2d", "rank 4", "got rank 3");
  EXPECT_ERROR_WITH(max_pool2d(uniform({1, 1, 4, 4}, 1), 2, 1, 2), "max_pool2d", "padding must be between 0 and half");
  EXPECT_ERROR_WITH(avg_pool2d(uniform({1, 1, 2, 2}, 1), 3), "avg_pool2d", "output size must be positive");
  EXPECT_ERROR_WITH(global_avg_pool(uniform({2, 3}, 1)), "global_avg_pool", "rank 4");
  EXPECT_ERROR_WITH(adaptive_avg_pool2d(uniform({1, 1, 4, 4}, 1), 2), "adaptive_avg_pool2d", "only output size 1");
}

// ---- dropout / drop path ------------------------------------------------------------------------------

TEST(DropoutOps, MaskIsBernoulliScaledAndReproducible) {
  const Tensor x = uniform({200, 100}, 91, 1.0, 2.0);  // no zeros in x: a zero output means dropped
  Generator g1(5), g2(5), g3(6);
  const Tensor y1 = dropout(x, 0.3, true, g1), y2 = dropout(x, 0.3, true, g2), y3 = dropout(x, 0.3, true, g3);
  EXPECT_TRUE(all_close(y1, y2, 0, 0));
  const auto xv = x.to_vector<double>(), v1 = y1.to_vector<double>(), v3 = y3.to_vector<double>();
  std::size_t dropped = 0, differs = 0;
  for (std::size_t i = 0; i < xv.size(); ++i) {
    if (v1[i] == 0) ++dropped;
    else EXPECT_NEAR(v1[i], xv[i] / 0.7, 1e-12);
    differs += (v1[i] == 0) != (v3[i] == 0);
  }
  // 20000 Bernoulli(0.3) draws: the drop rate lies within 5 sigma (0.016) of 0.3.
  EXPECT_NEAR(double(dropped) / double(xv.size()), 0.3, 0.016);
  EXPECT_GT(differs, 1000u) << "a different seed must give a different mask";
  // A second draw from the same generator advances the stream: a new mask.
  const Tensor y1b = dropout(x, 0.3, true, g1);
  EXPECT_FALSE(all_close(y1, y1b, 0, 0));
}

TEST(DropoutOps, EvalIdentityAndEdgeProbabilities) {
  const Tensor x = leaf({4, 5}, 92);
  Generator gen(1);
  EXPECT_TRUE(dropout(x, 0.5, false, gen).is_same(x));
  EXPECT_TRUE(dropout(x, 0.0, true, gen).is_same(x));
  EXPECT_TRUE(drop_path(x, 0.5, false, gen).is_same(x));
  EXPECT_EQ(gen.offset(), 0u) << "eval / p = 0 must not consume random numbers";
  EXPECT_TRUE(all_close(dropout(x, 1.0, true, gen), std::vector<double>(20, 0.0), 0, 0));
  EXPECT_ERROR_WITH(dropout(x, 1.5, true, gen), "dropout", "drop probability must be in [0, 1], got 1.5");
  EXPECT_ERROR_WITH(drop_path(x, -0.1, true, gen), "drop_path", "drop probability");
}

TEST(DropoutOps, DropPathDropsWholeSamplesAndGradientFollowsTheMask) {
  const Tensor x = leaf({64, 3, 2, 2}, 93, true, 1.0, 2.0);
  Generator gen(11);
  const Tensor y = drop_path(x, 0.25, true, gen);
  sum(y).backward();
  const auto xv = x.to_vector<double>(), yv = y.to_vector<double>(), gv = x.grad().to_vector<double>();
  int kept = 0;
  for (std::size_t n = 0; n < 64; ++n) {
    const bool keep = yv[n * 12] != 0;
    kept += keep;
    for (std::size_t k = 0; k < 12; ++k) {
      EXPECT_NEAR(yv[n * 12 + k], keep ? xv[n * 12 + k] / 0.75 : 0.0, 1e-12) << "sample " << n;
      EXPECT_NEAR(gv[n * 12 + k], keep ? 1.0 / 0.75 : 0.0, 1e-12) << "sample " << n;
    }
  }
  EXPECT_GT(kept, 30);
  EXPECT_LT(kept, 64);
  EXPECT_EQ(gen.offset(), 32u) << "one uniform (2 words) per sample: 64 samples = 32 Philox blocks";
}

}  // namespace
