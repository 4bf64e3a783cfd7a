// Gradcheck (float64 central differences) of every conv-block op and of the modules built from them, each
// case on contiguous inputs and on non-contiguous (transposed / strided) leaves. One table, one mechanism,
// as tests/ops/test_gradcheck.cpp. Random masks (dropout, drop_path) come from a generator re-seeded on
// every evaluation, so the function gradcheck differentiates is deterministic.
//
// This executable runs OpenMP with ONE thread: gradcheck calls the kernels tens of thousands of times on tiny
// tensors, and on a loaded 2-core box (or under ctest -j2) spinning OpenMP teams made it 24 s instead of
// 0.3 s (measured; OMP_WAIT_POLICY=passive fixes it too). The multi-threaded paths are checked against
// PyTorch by the golden tests and against references by the unit tests.
#include <omp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "layers_util.hpp"

namespace {

// Runs before any test of this executable.
const bool kSingleThreaded = [] {
  omp_set_num_threads(1);
  return true;
}();

using arclight::Generator;
using arclight::Shape;
using arclight::Tensor;
using namespace arclight::ops;
using arclight::testing::leaf;
namespace nn = arclight::nn;

struct InputSpec {
  Shape shape;
  double lo = 0, hi = 0;  // uniform domain when lo < hi, else normal
};

struct GradCase {
  std::string name;
  std::vector<InputSpec> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
};

Conv2dParams params(std::int64_t stride, std::int64_t pad, std::int64_t dilation = 1, std::int64_t groups = 1) {
  return conv2d_params(stride, pad, dilation, groups);
}

Conv2dParams asymmetric() {
  Conv2dParams p = conv2d_params(1, 0);
  p.pad_top = 0, p.pad_bottom = 2, p.pad_left = 1, p.pad_right = 0;
  p.stride_w = 2;
  return p;
}

// Running statistics of C channels, fresh for every evaluation (train mode updates them in place).
std::pair<Tensor, Tensor> stats(std::int64_t c) {
  Tensor rm = arclight::full({c}, 0.3, arclight::DType::f64), rv = arclight::full({c}, 1.7, arclight::DType::f64);
  return {rm, rv};
}

Tensor bn(const std::vector<Tensor>& x, bool training, Activation act = Activation::Identity) {
  auto [rm, rv] = stats(x[0].shape()[1]);
  return batch_norm(x[0], x.size() > 1 ? x[1] : Tensor(), x.size() > 2 ? x[2] : Tensor(), rm, rv, training, 0.1, 1e-5,
                    act);
}

const std::vector<GradCase>& cases() {
  static const std::vector<GradCase> table = {
      // ---- conv2d: every algorithm and option ----
      {"conv_3x3_pad1_bias", {{{2, 3, 5, 5}}, {{4, 3, 3, 3}}, {{4}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], params(1, 1)); }},
      {"conv_stride2_nobias", {{{2, 3, 7, 6}}, {{4, 3, 3, 3}}},
       [](auto& x) { return conv2d(x[0], x[1], Tensor(), params(2, 1)); }},
      {"conv_dilation2", {{{1, 2, 7, 8}}, {{3, 2, 3, 3}}, {{3}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], params(1, 2, 2)); }},
      {"conv_groups2", {{{2, 4, 5, 5}}, {{6, 2, 3, 3}}, {{6}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], params(1, 1, 1, 2)); }},
      {"conv_depthwise_3x3", {{{2, 3, 6, 6}}, {{3, 1, 3, 3}}, {{3}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], params(1, 1, 1, 3)); }},
      {"conv_depthwise_mult2_5x5_s2", {{{1, 2, 7, 7}}, {{4, 1, 5, 5}}},
       [](auto& x) { return conv2d(x[0], x[1], Tensor(), params(2, 2, 1, 2)); }},
      {"conv_depthwise_dilated", {{{1, 2, 7, 7}}, {{2, 1, 3, 3}}, {{2}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], params(1, 2, 2, 2)); }},
      {"conv_same_s2_odd_pad", {{{1, 2, 6, 7}}, {{3, 2, 3, 3}}, {{3}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], conv2d_params_same(2)); }},
      {"conv_same_depthwise_5x5_s2", {{{1, 3, 8, 8}}, {{3, 1, 5, 5}}},
       [](auto& x) { return conv2d(x[0], x[1], Tensor(), conv2d_params_same(2, 1, 3)); }},
      {"conv_1x1_gemm", {{{2, 4, 3, 3}}, {{5, 4, 1, 1}}, {{5}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], params(1, 0)); }},
      {"conv_1x1_stride2", {{{2, 4, 5, 5}}, {{3, 4, 1, 1}}},
       [](auto& x) { return conv2d(x[0], x[1], Tensor(), params(2, 0)); }},
      {"conv_asymmetric_pad", {{{1, 2, 5, 6}}, {{2, 2, 3, 2}}, {{2}}},
       [](auto& x) { return conv2d(x[0], x[1], x[2], asymmetric()); }},
      // ---- scaled weight standardisation, alone and through the conv ----
      {"ws_weight_gain", {{{4, 3, 3, 3}}, {{4, 1, 1, 1}, 0.5, 1.5}},
       [](auto& x) { return scaled_std_weight(x[0], x[1], 1.7139588594436646, 27e-5); }},
      {"ws_weight_no_gain", {{{3, 2, 2, 2}}}, [](auto& x) { return scaled_std_weight(x[0], Tensor(), 1.0, 1e-3); }},
      {"ws_conv_grouped", {{{2, 4, 5, 5}}, {{4, 2, 3, 3}}, {{4}, 0.5, 1.5}, {{4}}},
       [](auto& x) { return conv2d(x[0], scaled_std_weight(x[1], x[2], 1.7, 18e-5), x[3], params(1, 1, 1, 2)); }},
      // ---- batch norm ----
      {"bn_train_4d", {{{3, 2, 3, 3}}, {{2}}, {{2}}}, [](auto& x) { return bn(x, true); }},
      {"bn_train_2d", {{{5, 3}}, {{3}}, {{3}}}, [](auto& x) { return bn(x, true); }},
      {"bn_train_3d", {{{3, 2, 4}}, {{2}}, {{2}}}, [](auto& x) { return bn(x, true); }},
      {"bn_train_no_affine", {{{4, 3, 2, 2}}}, [](auto& x) { return bn(x, true); }},
      {"bn_train_silu", {{{3, 2, 3, 3}}, {{2}}, {{2}}}, [](auto& x) { return bn(x, true, Activation::SiLU); }},
      {"bn_eval_4d", {{{2, 3, 2, 3}}, {{3}}, {{3}}}, [](auto& x) { return bn(x, false); }},
      {"bn_eval_gelu", {{{2, 3, 2, 3}}, {{3}}, {{3}}}, [](auto& x) { return bn(x, false, Activation::GELU); }},
      // ---- activations ----
      {"relu", {{{3, 4, 5}}}, [](auto& x) { return relu(x[0]); }},
      {"silu", {{{3, 4, 5}}}, [](auto& x) { return silu(x[0]); }},
      {"gelu", {{{3, 4, 5}}}, [](auto& x) { return gelu(x[0]); }},
      {"sigmoid_wide", {{{3, 4, 5}, -20.0, 20.0}}, [](auto& x) { return sigmoid(x[0]); }},
      {"prelu_shared", {{{2, 3, 4}}, {{1}, 0.1, 0.4}}, [](auto& x) { return prelu(x[0], x[1]); }},
      {"prelu_per_channel", {{{2, 3, 2, 2}}, {{3}, 0.1, 0.4}}, [](auto& x) { return prelu(x[0], x[1]); }},
      {"prelu_rank1", {{{7}}, {{1}, 0.1, 0.4}}, [](auto& x) { return prelu(x[0], x[1]); }},
      {"se_scale", {{{2, 3, 4, 4}}, {{2, 3}}}, [](auto& x) { return se_scale(x[0], x[1]); }},
      {"se_scale_gate4d", {{{2, 3, 3, 2}}, {{2, 3, 1, 1}}}, [](auto& x) { return se_scale(x[0], x[1]); }},
      // ---- pooling ----
      {"avg_pool_k3s2p1_ceil_incl", {{{2, 2, 6, 7}}}, [](auto& x) { return avg_pool2d(x[0], 3, 2, 1, true, true); }},
      {"avg_pool_k3s2p1_ceil_excl", {{{2, 2, 6, 7}}}, [](auto& x) { return avg_pool2d(x[0], 3, 2, 1, true, false); }},
      {"avg_pool_nfnet_2x2_odd", {{{2, 2, 5, 7}}}, [](auto& x) { return avg_pool2d(x[0], 2, 2, 0, true, false); }},
      {"max_pool_k3s2p1", {{{2, 2, 7, 6}}}, [](auto& x) { return max_pool2d(x[0], 3, 2, 1); }},
      {"max_pool_k2_ceil", {{{1, 3, 5, 5}}}, [](auto& x) { return max_pool2d(x[0], 2, -1, 0, true); }},
      {"global_avg_pool", {{{2, 3, 4, 5}}}, [](auto& x) { return global_avg_pool(x[0]); }},
      // ---- dropout / drop path with a fixed mask ----
      {"dropout_fixed_mask", {{{3, 4, 5}}}, [](auto& x) {
         Generator gen(42);
         return dropout(x[0], 0.3, true, gen);
       }},
      {"drop_path_fixed_mask", {{{6, 2, 3, 3}}}, [](auto& x) {
         Generator gen(7);
         return drop_path(x[0], 0.5, true, gen);
       }},
  };
  return table;
}

class LayerGradcheck : public ::testing::TestWithParam<std::tuple<std::size_t, bool>> {};

TEST_P(LayerGradcheck, MatchesCentralDifferences) {
  const auto& c = cases()[std::get<0>(GetParam())];
  const bool contiguous = std::get<1>(GetParam());
  std::vector<Tensor> inputs;
  std::uint64_t seed = 300;
  for (const auto& spec : c.inputs) inputs.push_back(leaf(spec.shape, seed++, contiguous, spec.lo, spec.hi));
  if (!contiguous) {
    // The first input (the activation tensor) must really be strided, or this variant tests nothing new.
    EXPECT_FALSE(inputs[0].is_contiguous()) << c.name << ": harness gave a contiguous input";
  }
  const auto res = arclight::gradcheck(c.fn, inputs);
  EXPECT_TRUE(res.ok) << c.name << (contiguous ? " (contiguous)" : " (non-contiguous)") << ": " << res.message;
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<std::size_t, bool>>& info) {
  return cases()[std::get<0>(info.param)].name + (std::get<1>(info.param) ? "_contig" : "_strided");
}

INSTANTIATE_TEST_SUITE_P(AllLayerOps, LayerGradcheck,
                         ::testing::Combine(::testing::Range<std::size_t>(0, cases().size()), ::testing::Bool()),
                         case_name);

// ---- modules: gradcheck through every parameter (f64 modules; the parameters are the leaves) ----

// Replaces a module parameter's values by fresh random ones (in place, so the module sees them).
void randomize(Tensor t, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  arclight::NoGradGuard ng;
  arclight::ops::copy_(t, arclight::layers_test::uniform(t.shape(), seed, lo, hi));
}

std::vector<Tensor> with_params(const Tensor& x, const nn::Module& m) {
  std::vector<Tensor> v{x};
  for (const auto& p : m.named_parameters()) v.push_back(p.tensor);
  return v;
}

TEST(LayerModuleGradcheck, ScaledStdConv2dThroughStandardisationToWeightAndGain) {
  Generator gen(1);
  nn::ScaledStdConv2d conv(4, 6, 3, 2, nn::Padding::automatic(), 1, 2, true, 1.7015043497085571, 1e-5, 1.0, gen,
                           arclight::DType::f64);
  randomize(conv.gain(), 2, 0.5, 1.5);
  randomize(conv.bias(), 3);
  for (bool contiguous : {true, false}) {
    const Tensor x = leaf({2, 4, 5, 6}, 4, contiguous);
    const auto res = arclight::gradcheck([&](const std::vector<Tensor>& in) { return conv.forward(in[0]); },
                                         with_params(x, conv));
    EXPECT_TRUE(res.ok) << (contiguous ? "contiguous: " : "strided: ") << res.message;
  }
}

TEST(LayerModuleGradcheck, SqueezeExciteAndSEModule) {
  Generator gen(5);
  nn::SqueezeExcite se(6, 2, arclight::ops::Activation::SiLU, gen, arclight::DType::f64);
  nn::SEModule se2(4, 3, arclight::ops::Activation::ReLU, true, gen, arclight::DType::f64);
  for (bool contiguous : {true, false}) {
    const Tensor x = leaf({2, 6, 3, 4}, 6, contiguous);
    auto res = arclight::gradcheck([&](const std::vector<Tensor>& in) { return se.forward(in[0]); }, with_params(x, se));
    EXPECT_TRUE(res.ok) << "SqueezeExcite: " << res.message;
    const Tensor x2 = leaf({3, 4, 2, 3}, 7, contiguous);
    res = arclight::gradcheck([&](const std::vector<Tensor>& in) { return se2.forward(in[0]); }, with_params(x2, se2));
    EXPECT_TRUE(res.ok) << "SEModule: " << res.message;
  }
}

TEST(LayerModuleGradcheck, EcaModuleAndConv1d) {
  Generator gen(8);
  nn::EcaModule eca(64, 3, 2.0, 1.0, gen, arclight::DType::f64);  // k = 3 for 64 channels
  for (bool contiguous : {true, false}) {
    const Tensor x = leaf({2, 64, 2, 2}, 9, contiguous);
    const auto res =
        arclight::gradcheck([&](const std::vector<Tensor>& in) { return eca.forward(in[0]); }, with_params(x, eca));
    EXPECT_TRUE(res.ok) << "EcaModule: " << res.message;
  }
  nn::Conv1d conv(4, 6, 3, 2, 1, 1, 2, true, gen, arclight::DType::f64);
  const auto res = arclight::gradcheck([&](const std::vector<Tensor>& in) { return conv.forward(in[0]); },
                                       with_params(leaf({2, 4, 9}, 10, false), conv));
  EXPECT_TRUE(res.ok) << "Conv1d: " << res.message;
}

TEST(LayerModuleGradcheck, BatchNormAct2dTrainAndEval) {
  nn::BatchNormAct2d bn(3, arclight::ops::Activation::SiLU, 1e-5, 0.1, true, true, arclight::DType::f64);
  randomize(bn.weight(), 11, 0.5, 1.5);
  randomize(bn.bias(), 12);
  for (bool training : {true, false}) {
    bn.train(training);
    const Tensor x = leaf({3, 3, 2, 3}, 13, false);
    const auto res =
        arclight::gradcheck([&](const std::vector<Tensor>& in) { return bn.forward(in[0]); }, with_params(x, bn));
    EXPECT_TRUE(res.ok) << (training ? "train: " : "eval: ") << res.message;
  }
}

}  // namespace
