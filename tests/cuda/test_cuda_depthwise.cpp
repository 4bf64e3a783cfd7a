// The depthwise-convolution kernels (kernels/cuda/depthwise.cuh) against the CPU convolution kernels
// (kernels/cpu/conv2d.hpp, double reference): forward (with and without bias), backward-data and backward-filter
// (weight and bias gradients, each optional) for stride 1 and 2, kernels 3, 5 and 7, dilation, TF "same" asymmetric
// pads, on both paths (tiled: several planes per block, several tiles per plane, several work items per filter block;
// generic: other kernel sizes and halos too large to stage); outputs pre-filled with NaN; the filter
// gradient bitwise reproducible. Validation (multiplier != 1, inconsistent output size, missing workspace) runs
// without a GPU.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "harness.hpp"
#include "kernels/common/conv_shape.hpp"
#include "kernels/cpu/conv2d.hpp"
#include "kernels/cuda/launchers_ops.hpp"

namespace {

using arclight::kernels::Conv2dParams;
using arclight::kernels::Conv2dShape;
using namespace arclight::testing::cuda;
namespace kc = arclight::kernels::cuda;

struct Case {
  std::string name;
  std::int64_t n, c, h, w, k, stride, dilation;
  bool same, bias;
};

Conv2dShape shape_of(const Case& c) {
  Conv2dParams p;
  p.stride_h = p.stride_w = c.stride;
  p.dilation_h = p.dilation_w = c.dilation;
  p.groups = c.c;
  if (c.same) {
    p.pad_mode = arclight::kernels::PadMode::Same;
  } else {
    p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = (c.k - 1) / 2 * c.dilation;
  }
  return arclight::kernels::conv2d_shape(c.n, c.c, c.h, c.w, c.c, c.k, c.k, p);
}

const std::vector<Case> kCases = {
    {"k3s1", 2, 8, 17, 15, 3, 1, 1, false, true},
    {"k3s2_same", 2, 5, 16, 13, 3, 2, 1, true, false},  // TF "same": one more pad at the bottom/right
    {"k5s2_same", 3, 4, 15, 18, 5, 2, 1, true, true},
    {"k5s1", 1, 6, 9, 9, 5, 1, 1, false, false},
    {"k3_dil2", 2, 3, 12, 11, 3, 1, 2, false, true},
    {"k3_chunks", 4, 3, 70, 70, 3, 1, 1, false, true},  // 19 600 output positions: five backward-filter chunks
    {"k3s2_large", 2, 2, 129, 131, 3, 2, 1, true, true},
    // The tiled kernels' packing: 20 planes of 7x7 per forward block, all 9 images of a channel per filter block.
    {"k5_small_planes", 9, 40, 7, 7, 5, 1, 1, false, true},
    {"k3s2_many_images", 50, 3, 6, 6, 3, 2, 1, true, true},
    {"k5s2_dil2", 2, 3, 23, 21, 5, 2, 2, true, true},
    // 700 channels: 3 filter blocks per channel over 4 work items (one block takes two).
    {"k3_multi_item", 2, 700, 40, 40, 3, 1, 1, false, true},
    // The generic kernels: a 7x7 kernel, and a dilation whose halo does not fit a block's shared memory.
    {"k7_generic", 2, 3, 13, 12, 7, 1, 1, false, true},
    {"k3_dil70_generic", 1, 2, 9, 9, 3, 1, 70, false, true},
};

class CudaDepthwise : public ::testing::TestWithParam<Case> {};

TEST_P(CudaDepthwise, MatchesTheCpuConvolution) {
  ARCLIGHT_REQUIRE_GPU();
  const Case& c = GetParam();
  const Conv2dShape s = shape_of(c);
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const auto x = uniform(std::size_t(s.input_numel()), g, -1.f, 1.f);
  const auto w = uniform(std::size_t(s.weight_numel()), g, -0.5f, 0.5f);
  const auto b = uniform(std::size_t(s.c_out), g, -1.f, 1.f);
  const auto dy = uniform(std::size_t(s.output_numel()), g, -1.f, 1.f);
  // CPU reference in double
  const auto xd = to_double(x), wd = to_double(w), bd = to_double(b), dyd = to_double(dy);
  std::vector<double> y_ref(std::size_t(s.output_numel())), dx_ref(std::size_t(s.input_numel())),
      dw_ref(std::size_t(s.weight_numel())), db_ref(std::size_t(s.c_out));
  arclight::kernels::cpu::conv2d_forward<double>(s, xd.data(), wd.data(), c.bias ? bd.data() : nullptr, y_ref.data());
  arclight::kernels::cpu::conv2d_backward_data<double>(s, dyd.data(), wd.data(), dx_ref.data());
  arclight::kernels::cpu::conv2d_backward_weight<double>(s, xd.data(), dyd.data(), dw_ref.data(), db_ref.data());

  arclight::cuda::DeviceBuffer<float> dx_in(x), dw_in(w), db_in(b), ddy(dy);
  auto y = garbage(std::size_t(s.output_numel())), dx = garbage(std::size_t(s.input_numel()));
  auto gw = garbage(std::size_t(s.weight_numel())), gb = garbage(std::size_t(s.c_out));
  auto ws = garbage(std::size_t(kc::depthwise_conv2d_backward_filter_workspace_floats(s)));
  kc::depthwise_conv2d_forward(s, dx_in.data(), dw_in.data(), c.bias ? db_in.data() : nullptr, y.data(), nullptr);
  kc::depthwise_conv2d_backward_data(s, ddy.data(), dw_in.data(), dx.data(), nullptr);
  kc::depthwise_conv2d_backward_filter(s, dx_in.data(), ddy.data(), gw.data(), gb.data(), ws.data(), nullptr);
  EXPECT_TRUE(near_all(y.download(), y_ref, 1e-5, 1e-5, "forward"));
  EXPECT_TRUE(near_all(dx.download(), dx_ref, 1e-5, 1e-5, "backward data"));
  const double wscale = max_abs(dw_ref), bscale = max_abs(db_ref);
  EXPECT_TRUE(near_all(gw.download(), dw_ref, 1e-4, 1e-5 * wscale, "backward filter"));
  EXPECT_TRUE(near_all(gb.download(), db_ref, 1e-4, 1e-5 * bscale, "bias gradient"));

  // Bitwise reproducible, and each of dw / dbias may be skipped without changing the other.
  const auto gw1 = gw.download(), gb1 = gb.download();
  auto gw2 = garbage(gw1.size()), gb2 = garbage(gb1.size());
  kc::depthwise_conv2d_backward_filter(s, dx_in.data(), ddy.data(), gw2.data(), nullptr, ws.data(), nullptr);
  kc::depthwise_conv2d_backward_filter(s, nullptr, ddy.data(), nullptr, gb2.data(), ws.data(), nullptr);
  EXPECT_EQ(gw2.download(), gw1);
  EXPECT_EQ(gb2.download(), gb1);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaDepthwise, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// Host-side validation: runs without a GPU (it throws before any CUDA call).
TEST(CudaDepthwiseValidation, RefusesWhatTheKernelsDoNotDo) {
  Case c{"x", 2, 4, 8, 8, 3, 1, 1, false, false};
  Conv2dShape s = shape_of(c);
  auto* f = reinterpret_cast<float*>(16);
  Conv2dShape mult2 = s;
  mult2.c_out = 8;  // channel multiplier 2
  EXPECT_ERROR_WITH(kc::depthwise_conv2d_forward(mult2, f, f, nullptr, f, nullptr), "depthwise_conv2d_forward",
                    "multiplier 1");
  Conv2dShape bad_out = s;
  bad_out.out_h += 1;
  EXPECT_ERROR_WITH(kc::depthwise_conv2d_backward_data(bad_out, f, f, f, nullptr), "depthwise_conv2d_backward_data",
                    "does not follow");
  EXPECT_ERROR_WITH(kc::depthwise_conv2d_backward_filter(s, f, f, f, f, nullptr, nullptr),
                    "depthwise_conv2d_backward_filter", "workspace");
  EXPECT_ERROR_WITH(kc::depthwise_conv2d_forward(s, nullptr, f, nullptr, f, nullptr), "depthwise_conv2d_forward",
                    "must not be null");
  EXPECT_EQ(kc::depthwise_conv2d_backward_filter_workspace_floats(s), 4 * 1 * 10);  // 128 positions: one chunk
}

}  // namespace
