// Unit tests of the convolution kernels (kernels/cpu/conv2d.hpp, depthwise_conv2d.hpp): every algorithm
// (1x1 GEMM, im2col + GEMM with whole-image and row-band tiling, direct depthwise) against the naive double
// reference, forward and both backward passes, in double (tight) and float (rtol 1e-4), outputs pre-filled
// with NaN; TF "same" padding arithmetic; and the error messages of bad shapes.
#include <gtest/gtest.h>

#include <array>
#include <ostream>
#include <string>
#include <vector>

#include "conv/conv_test_util.hpp"
#include "kernels/cpu/conv2d.hpp"

namespace {

using arclight::kernels::Conv2dParams;
using arclight::kernels::Conv2dShape;
using arclight::kernels::PadMode;
namespace cpu = arclight::kernels::cpu;
namespace t = arclight::test;

struct ConvCase {
  std::string name;
  std::int64_t n, c_in, h, w, c_out, kh, kw;
  Conv2dParams p;
  bool bias;
};
// gtest prints a failing parameter by its name instead of its bytes.
void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name; }

Conv2dParams explicit_pad(std::int64_t s, std::int64_t top, std::int64_t bottom, std::int64_t left,
                          std::int64_t right, std::int64_t d = 1, std::int64_t g = 1) {
  Conv2dParams p;
  p.stride_h = p.stride_w = s;
  p.pad_top = top;
  p.pad_bottom = bottom;
  p.pad_left = left;
  p.pad_right = right;
  p.dilation_h = p.dilation_w = d;
  p.groups = g;
  return p;
}
Conv2dParams same_pad(std::int64_t s, std::int64_t d = 1, std::int64_t g = 1) {
  Conv2dParams p;
  p.stride_h = p.stride_w = s;
  p.pad_mode = PadMode::Same;
  p.dilation_h = p.dilation_w = d;
  p.groups = g;
  return p;
}

std::vector<ConvCase> conv_cases() {
  Conv2dParams rect = explicit_pad(1, 0, 1, 2, 1);
  rect.stride_h = 2;  // different strides per axis
  Conv2dParams dw_rect = explicit_pad(1, 1, 0, 1, 1, 1, 3);
  dw_rect.stride_h = 2;
  return {
      {"k3_s1_p1_bias", 2, 3, 5, 6, 4, 3, 3, explicit_pad(1, 1, 1, 1, 1), true},
      {"k3_s2_p1", 2, 3, 7, 7, 5, 3, 3, explicit_pad(2, 1, 1, 1, 1), false},
      {"k3_dil2_p2_bias", 2, 2, 8, 7, 3, 3, 3, explicit_pad(1, 2, 2, 2, 2, 2), true},
      {"k3_groups2_bias", 2, 4, 6, 5, 6, 3, 3, explicit_pad(1, 1, 1, 1, 1, 1, 2), true},
      {"k3_groups3_s2_same", 3, 6, 9, 8, 3, 3, 3, same_pad(2, 1, 3), true},
      {"k3_s2_same_even", 2, 3, 8, 8, 4, 3, 3, same_pad(2), true},
      {"k5_s2_same_odd", 1, 2, 7, 9, 3, 5, 5, same_pad(2), false},
      {"k3_s1_same_dil2", 2, 2, 6, 7, 2, 3, 3, same_pad(1, 2), true},
      {"asym_pads", 2, 3, 6, 5, 2, 3, 2, explicit_pad(1, 0, 2, 1, 0), true},
      {"rect_kernel_strides", 2, 2, 7, 6, 3, 1, 3, rect, false},
      {"k1_s1_gemm_bias", 2, 5, 4, 3, 6, 1, 1, explicit_pad(1, 0, 0, 0, 0), true},
      {"k1_s1_gemm_groups", 2, 6, 3, 3, 4, 1, 1, explicit_pad(1, 0, 0, 0, 0, 1, 2), false},
      {"k1_s2_im2col", 2, 4, 5, 5, 3, 1, 1, explicit_pad(2, 0, 0, 0, 0), true},
      {"dw_k3_s1_p1_bias", 2, 5, 6, 7, 5, 3, 3, explicit_pad(1, 1, 1, 1, 1, 1, 5), true},
      {"dw_k5_s2_same", 2, 4, 9, 8, 4, 5, 5, same_pad(2, 1, 4), true},
      {"dw_k3_dil2", 1, 3, 7, 7, 3, 3, 3, explicit_pad(1, 2, 2, 2, 2, 2, 3), false},
      {"dw_mult2_s2", 2, 3, 6, 5, 6, 3, 3, explicit_pad(2, 1, 0, 0, 1, 1, 3), true},
      {"dw_k4_s1_same_asym", 1, 2, 6, 6, 2, 4, 4, same_pad(1, 1, 2), true},
      {"dw_k5_s1_same_fast", 2, 3, 9, 11, 3, 5, 5, same_pad(1, 1, 3), true},
      {"dw_k7_s1_p3_mult2_fast", 1, 2, 8, 12, 4, 7, 7, explicit_pad(1, 3, 3, 3, 3, 1, 2), true},
      {"dw_k3_stride_h2_w1_fast", 2, 3, 7, 9, 3, 3, 3, dw_rect, false},
      {"dw_k3_s1_narrow_fast", 1, 2, 5, 2, 2, 3, 3, explicit_pad(1, 1, 1, 1, 1, 1, 2), true},
  };
}

struct Variant {
  cpu::ConvAlgo algo;
  std::size_t budget;
  std::string label;
};

// The algorithm/tiling variants that apply to a shape: Auto, forced im2col with the default budget, with a
// budget of two images (multi-image chunks), with a tiny budget (one output row per band), and the direct
// depthwise / 1x1 GEMM paths where they apply.
std::vector<Variant> variants_for(const Conv2dShape& s, std::size_t elem) {
  std::vector<Variant> v = {{cpu::ConvAlgo::Auto, cpu::kConvColumnBudgetBytes, "auto"},
                            {cpu::ConvAlgo::Im2col, cpu::kConvColumnBudgetBytes, "im2col"},
                            {cpu::ConvAlgo::Im2col, 1, "im2col_row_bands"}};
  const std::size_t per_image = std::size_t(s.c_in * s.kh * s.kw * s.out_h * s.out_w) * elem;
  if (s.n > 2) v.push_back({cpu::ConvAlgo::Im2col, 2 * per_image, "im2col_two_images"});
  if (s.n == 2) v.push_back({cpu::ConvAlgo::Im2col, per_image, "im2col_one_image"});
  // Two output rows per band: bands that do not divide out_h leave a shorter last band.
  v.push_back({cpu::ConvAlgo::Im2col, std::size_t(s.c_in * s.kh * s.kw * s.out_w * 2) * elem, "im2col_2row_bands"});
  if (cpu::is_depthwise(s)) v.push_back({cpu::ConvAlgo::Depthwise, 0, "depthwise"});
  if (cpu::is_pointwise_gemm(s)) v.push_back({cpu::ConvAlgo::Gemm1x1, 0, "gemm1x1"});
  return v;
}

class ConvCaseTest : public ::testing::TestWithParam<ConvCase> {
 protected:
  template <typename T>
  void run_all() {
    const ConvCase& c = GetParam();
    const std::array<std::int64_t, 4> in{c.n, c.c_in, c.h, c.w};
    const std::array<std::int64_t, 4> wt{c.c_out, c.c_in / c.p.groups, c.kh, c.kw};
    const Conv2dShape s = cpu::make_conv2d_shape(in, wt, c.p, c.bias ? c.c_out : -1);
    const auto x = t::random_vector(s.input_numel(), 1);
    const auto w = t::random_vector(s.weight_numel(), 2);
    const auto b = t::random_vector(s.c_out, 3);
    const auto dy = t::random_vector(s.output_numel(), 4);
    const auto y_ref = t::ref_conv2d_forward(s, x, w, c.bias ? &b : nullptr);
    std::vector<double> dx_ref, dw_ref, db_ref;
    t::ref_conv2d_backward(s, x, w, dy, dx_ref, dw_ref, db_ref);

    const auto xt = t::cast_vector<T>(x), wt_ = t::cast_vector<T>(w), bt = t::cast_vector<T>(b),
               dyt = t::cast_vector<T>(dy);
    for (const Variant& v : variants_for(s, sizeof(T))) {
      SCOPED_TRACE(v.label);
      const cpu::Conv2dOptions opt{v.algo, v.budget};
      auto y = t::garbage<T>(s.output_numel());
      cpu::conv2d_forward<T>(s, xt.data(), wt_.data(), c.bias ? bt.data() : nullptr, y.data(), opt);
      EXPECT_TRUE(t::close_to_reference(y, y_ref)) << "forward";

      auto dx = t::garbage<T>(s.input_numel());
      cpu::conv2d_backward_data<T>(s, dyt.data(), wt_.data(), dx.data(), opt);
      EXPECT_TRUE(t::close_to_reference(dx, dx_ref)) << "backward data";

      auto dw = t::garbage<T>(s.weight_numel());
      auto db = t::garbage<T>(s.c_out);
      cpu::conv2d_backward_weight<T>(s, xt.data(), dyt.data(), dw.data(), c.bias ? db.data() : nullptr, opt);
      EXPECT_TRUE(t::close_to_reference(dw, dw_ref)) << "backward weight";
      if (c.bias) {
        EXPECT_TRUE(t::close_to_reference(db, db_ref)) << "backward bias";
      }
    }
  }
};

TEST_P(ConvCaseTest, MatchesNaiveReferenceDouble) { run_all<double>(); }
TEST_P(ConvCaseTest, MatchesNaiveReferenceFloat) { run_all<float>(); }

INSTANTIATE_TEST_SUITE_P(Cpu, ConvCaseTest, ::testing::ValuesIn(conv_cases()),
                         [](const ::testing::TestParamInfo<ConvCase>& info) { return info.param.name; });

TEST(CpuConv2dShape, SamePaddingMatchesTensorFlowRule) {
  // out = ceil(in / stride); total pad = max((out - 1) * stride + (k - 1) * d + 1 - in, 0), the extra one at
  // the bottom/right (hand-computed values).
  struct Row {
    std::int64_t in, k, s, d, before, after, out;
  };
  const Row rows[] = {{224, 3, 2, 1, 0, 1, 112}, {224, 3, 1, 1, 1, 1, 224}, {112, 5, 2, 1, 1, 2, 56},
                      {7, 5, 1, 1, 2, 2, 7},     {8, 3, 2, 1, 0, 1, 4},     {9, 3, 2, 1, 1, 1, 5},
                      {6, 3, 1, 2, 2, 2, 6},     {5, 1, 2, 1, 0, 0, 3},     {3, 7, 1, 1, 3, 3, 3}};
  for (const Row& r : rows) {
    Conv2dParams p = same_pad(r.s, r.d);
    const Conv2dShape s = arclight::kernels::conv2d_shape(1, 1, r.in, r.in, 1, r.k, r.k, p);
    EXPECT_EQ(s.pad_top, r.before) << "in " << r.in << " k " << r.k << " s " << r.s;
    EXPECT_EQ(s.pad_bottom, r.after) << "in " << r.in << " k " << r.k << " s " << r.s;
    EXPECT_EQ(s.pad_left, r.before);
    EXPECT_EQ(s.pad_right, r.after);
    EXPECT_EQ(s.out_h, r.out);
    EXPECT_EQ(s.out_w, r.out);
  }
}

TEST(CpuConv2dShape, ColumnTilingRespectsBudget) {
  const std::array<std::int64_t, 4> in{8, 16, 20, 20}, wt{16, 16, 3, 3};
  const Conv2dShape s = cpu::make_conv2d_shape(in, wt, explicit_pad(1, 1, 1, 1, 1));
  const std::int64_t per_image = 16 * 9 * 20 * 20;
  auto t1 = cpu::plan_column_tiling(s, sizeof(float), std::size_t(per_image * 3) * sizeof(float));
  EXPECT_EQ(t1.images, 3);
  EXPECT_EQ(t1.rows, 20);
  EXPECT_LE(t1.elems * std::int64_t(sizeof(float)), per_image * 3 * std::int64_t(sizeof(float)));
  auto t2 = cpu::plan_column_tiling(s, sizeof(float), std::size_t(per_image / 4) * sizeof(float));
  EXPECT_EQ(t2.images, 1);
  EXPECT_EQ(t2.rows, 5);
  EXPECT_EQ(t2.elems, per_image / 4);
  auto t3 = cpu::plan_column_tiling(s, sizeof(double), cpu::kConvColumnBudgetBytes);
  EXPECT_EQ(t3.images, 8);  // the whole batch fits in 64 MiB
  EXPECT_EQ(cpu::conv2d_workspace_elems<double>(s), t3.elems);
}

TEST(CpuConv2d, UsesCallerWorkspaceWithGarbageInside) {
  const std::array<std::int64_t, 4> in{3, 4, 7, 6}, wt{5, 4, 3, 3};
  const cpu::Conv2dOptions opt{cpu::ConvAlgo::Auto, 4 * 9 * 7 * 6 * sizeof(double)};
  const Conv2dShape s = cpu::make_conv2d_shape(in, wt, explicit_pad(1, 1, 1, 1, 1), 5);
  const auto x = t::random_vector(s.input_numel(), 21), w = t::random_vector(s.weight_numel(), 22),
             b = t::random_vector(5, 23), dy = t::random_vector(s.output_numel(), 24);
  auto ws = t::garbage<double>(cpu::conv2d_workspace_elems<double>(s, opt));
  ASSERT_GT(ws.size(), 0u);
  auto y = t::garbage<double>(s.output_numel());
  cpu::conv2d_forward(s, x.data(), w.data(), b.data(), y.data(), opt, ws);
  EXPECT_TRUE(t::close_to_reference(y, t::ref_conv2d_forward(s, x, w, &b)));
  std::vector<double> dx_ref, dw_ref, db_ref;
  t::ref_conv2d_backward(s, x, w, dy, dx_ref, dw_ref, db_ref);
  std::fill(ws.begin(), ws.end(), std::numeric_limits<double>::quiet_NaN());
  auto dx = t::garbage<double>(s.input_numel());
  cpu::conv2d_backward_data(s, dy.data(), w.data(), dx.data(), opt, ws);
  EXPECT_TRUE(t::close_to_reference(dx, dx_ref));
  std::fill(ws.begin(), ws.end(), std::numeric_limits<double>::quiet_NaN());
  auto dw = t::garbage<double>(s.weight_numel());
  cpu::conv2d_backward_weight(s, x.data(), dy.data(), dw.data(), static_cast<double*>(nullptr), opt, ws);
  EXPECT_TRUE(t::close_to_reference(dw, dw_ref));
  std::vector<double> small(ws.size() - 1);
  EXPECT_TRUE(t::throws_with([&] { cpu::conv2d_forward(s, x.data(), w.data(), b.data(), y.data(), opt, small); },
                             {"conv2d_forward", "workspace has", "the column buffer needs"}));
}

TEST(CpuConv2d, AlgorithmSelection) {
  const std::array<std::int64_t, 4> in{1, 8, 5, 5};
  EXPECT_EQ(cpu::resolve_conv_algo(cpu::make_conv2d_shape(in, std::array<std::int64_t, 4>{8, 1, 3, 3},
                                                          explicit_pad(1, 1, 1, 1, 1, 1, 8)),
                                   cpu::ConvAlgo::Auto),
            cpu::ConvAlgo::Depthwise);
  EXPECT_EQ(cpu::resolve_conv_algo(
                cpu::make_conv2d_shape(in, std::array<std::int64_t, 4>{4, 8, 1, 1}, explicit_pad(1, 0, 0, 0, 0)),
                cpu::ConvAlgo::Auto),
            cpu::ConvAlgo::Gemm1x1);
  EXPECT_EQ(cpu::resolve_conv_algo(
                cpu::make_conv2d_shape(in, std::array<std::int64_t, 4>{4, 8, 1, 1}, explicit_pad(2, 0, 0, 0, 0)),
                cpu::ConvAlgo::Auto),
            cpu::ConvAlgo::Im2col);
}

// ---- bad input -----------------------------------------------------------------------------------------

TEST(CpuConv2dErrors, WrongRanks) {
  const std::array<std::int64_t, 3> in3{2, 3, 5};
  const std::array<std::int64_t, 4> in4{2, 3, 5, 5}, wt{4, 3, 3, 3};
  const std::array<std::int64_t, 2> wt2{4, 27};
  EXPECT_TRUE(t::throws_with([&] { cpu::make_conv2d_shape(in3, wt, {}); }, {"conv2d", "input must have rank 4",
                                                                               "got rank 3", "[2, 3, 5]"}));
  EXPECT_TRUE(t::throws_with([&] { cpu::make_conv2d_shape(in4, wt2, {}); }, {"conv2d", "weight must have rank 4",
                                                                                "got rank 2"}));
}

TEST(CpuConv2dErrors, ChannelMismatchAndGroups) {
  const std::array<std::int64_t, 4> in{2, 6, 5, 5};
  EXPECT_TRUE(t::throws_with(
      [&] { cpu::make_conv2d_shape(in, std::array<std::int64_t, 4>{4, 4, 3, 3}, {}); },
      {"conv2d", "channel mismatch", "6 channels", "[4, 4, 3, 3]", "expects 4"}));
  Conv2dParams g4;
  g4.groups = 4;
  EXPECT_TRUE(t::throws_with([&] { cpu::make_conv2d_shape(in, std::array<std::int64_t, 4>{8, 1, 3, 3}, g4); },
                             {"conv2d", "groups (4) must divide the input channels (6)"}));
  Conv2dParams g3;
  g3.groups = 3;
  EXPECT_TRUE(t::throws_with([&] { cpu::make_conv2d_shape(in, std::array<std::int64_t, 4>{4, 2, 3, 3}, g3); },
                             {"conv2d", "groups (3) must divide the output channels (4)"}));
  Conv2dParams g0;
  g0.groups = 0;
  EXPECT_TRUE(t::throws_with([&] { cpu::make_conv2d_shape(in, std::array<std::int64_t, 4>{4, 6, 3, 3}, g0); },
                             {"conv2d", "groups must be >= 1, got 0"}));
}

TEST(CpuConv2dErrors, EmptyOutputBadParamsAndBias) {
  const std::array<std::int64_t, 4> in{1, 2, 4, 4}, wt{3, 2, 5, 5}, wt3{3, 2, 3, 3};
  EXPECT_TRUE(t::throws_with([&] { cpu::make_conv2d_shape(in, wt, {}); },
                             {"conv2d", "output size must be positive", "got 0x0"}));
  Conv2dParams dil;
  dil.dilation_h = dil.dilation_w = 3;
  EXPECT_TRUE(
      t::throws_with([&] { cpu::make_conv2d_shape(in, wt3, dil); }, {"conv2d", "output size must be positive"}));
  Conv2dParams neg;
  neg.pad_left = -1;
  EXPECT_TRUE(t::throws_with([&] { cpu::make_conv2d_shape(in, wt3, neg); }, {"conv2d", "padding must be >= 0"}));
  Conv2dParams st;
  st.stride_h = 0;
  EXPECT_TRUE(t::throws_with([&] { cpu::make_conv2d_shape(in, wt3, st); }, {"conv2d", "stride must be >= 1"}));
  EXPECT_TRUE(t::throws_with([&] { cpu::make_conv2d_shape(in, wt3, {}, 2); },
                             {"conv2d", "bias has 2 elements, expected 3"}));
  EXPECT_NO_THROW(cpu::make_conv2d_shape(in, wt3, {}, 3, "my_conv"));
  EXPECT_TRUE(t::throws_with([&] { cpu::make_conv2d_shape(in, wt, {}, -1, "my_conv"); }, {"my_conv: output size"}));
}

TEST(CpuConv2dErrors, KernelsRecheckShapeAndAlgorithm) {
  const std::array<std::int64_t, 4> in{1, 4, 5, 5}, wt{4, 4, 3, 3};
  Conv2dShape s = cpu::make_conv2d_shape(in, wt, explicit_pad(1, 1, 1, 1, 1));
  std::vector<float> x(100, 1.f), w(144, 1.f), y(100);
  EXPECT_TRUE(t::throws_with(
      [&] { cpu::conv2d_forward<float>(s, x.data(), w.data(), nullptr, y.data(), {cpu::ConvAlgo::Depthwise}); },
      {"conv2d_forward", "depthwise algorithm needs groups == input channels"}));
  EXPECT_TRUE(t::throws_with(
      [&] { cpu::conv2d_forward<float>(s, x.data(), w.data(), nullptr, y.data(), {cpu::ConvAlgo::Gemm1x1}); },
      {"conv2d_forward", "1x1 GEMM algorithm needs a 1x1 kernel"}));
  EXPECT_TRUE(t::throws_with([&] { cpu::depthwise_conv2d_forward<float>(s, x.data(), w.data(), nullptr, y.data()); },
                             {"depthwise_conv2d_forward", "expected a depthwise convolution"}));
  EXPECT_TRUE(t::throws_with([&] { cpu::conv2d_forward<float>(s, x.data(), nullptr, nullptr, y.data()); },
                             {"conv2d_forward", "weight must not be null"}));
  Conv2dShape bad = s;
  bad.groups = 3;
  EXPECT_TRUE(t::throws_with([&] { cpu::conv2d_backward_data<float>(bad, y.data(), w.data(), x.data()); },
                             {"conv2d_backward_data", "groups (3) must divide the input channels (4)"}));
  bad = s;
  bad.out_h = 0;
  EXPECT_TRUE(t::throws_with(
      [&] { cpu::conv2d_backward_weight<float>(bad, x.data(), y.data(), w.data(), nullptr); },
      {"conv2d_backward_weight", "output size must be positive"}));
}

}  // namespace
