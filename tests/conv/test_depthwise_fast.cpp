// The fast depthwise kernels (kernels/cpu/depthwise_conv2d.hpp: the channel-lane path for small maps and the
// row path for large ones) against the naive double reference of conv_test_util.hpp, on every depthwise conv
// shape of efficientnet_b0 at 32 px and 64 px inputs — with timm's symmetric padding and with TF "same"
// padding (asymmetric: the odd pixel at the bottom/right) — plus the awkward cases: 5x5 kernels on 1x1 and
// 2x2 maps, stride 2 on odd sizes, channel counts that leave a partial lane block, dilation, non-square maps
// and a channel multiplier of 2. Every output buffer is NaN-prefilled and followed by a guard zone that must
// stay untouched; float and double; forward with and without bias; backward-weight with dw and dbias
// together and alone; and every pass must give bit-identical results with 1 and 2 threads (no thread-count
// dependent reduction order).
#include <gtest/gtest.h>

#include <omp.h>

#include <cstring>
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

using t::guard_intact;
using t::guarded_garbage;
using t::head;

struct DwCase {
  std::string name;
  std::int64_t n, c, h, w, k, stride;
  bool same;                 // TF "same" padding, else timm's symmetric ((stride - 1) + (k - 1)) / 2
  std::int64_t mult = 1;     // channel multiplier (c_out = mult * c)
  std::int64_t dilation = 1;
};
void PrintTo(const DwCase& c, std::ostream* os) { *os << c.name; }

Conv2dShape make_shape(const DwCase& dc) {
  Conv2dParams p;
  p.stride_h = p.stride_w = dc.stride;
  p.dilation_h = p.dilation_w = dc.dilation;
  if (dc.same) {
    p.pad_mode = PadMode::Same;
  } else {
    p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = ((dc.stride - 1) + dc.dilation * (dc.k - 1)) / 2;
  }
  p.groups = dc.c;
  const std::int64_t in[4] = {dc.n, dc.c, dc.h, dc.w};
  const std::int64_t wt[4] = {dc.c * dc.mult, 1, dc.k, dc.k};
  return cpu::make_conv2d_shape(in, wt, p, dc.c * dc.mult, "test");
}

template <typename T>
bool bit_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <typename T>
struct Outputs {
  std::vector<T> y, y_nobias, dx, dw, db, dw_alone, db_alone;
};

// Runs every pass of the production kernels in T with `threads` OpenMP threads; returns the outputs without
// their guard zones (checked here).
template <typename T>
Outputs<T> run_kernels(const Conv2dShape& s, const std::vector<double>& x, const std::vector<double>& w,
                    const std::vector<double>& b, const std::vector<double>& dy, int threads) {
  const auto xt = t::cast_vector<T>(x), wt = t::cast_vector<T>(w), bt = t::cast_vector<T>(b),
             dyt = t::cast_vector<T>(dy);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto y = guarded_garbage<T>(s.output_numel()), y0 = guarded_garbage<T>(s.output_numel());
  auto dx = guarded_garbage<T>(s.input_numel());
  auto dw = guarded_garbage<T>(s.weight_numel()), db = guarded_garbage<T>(s.c_out);
  auto dw1 = guarded_garbage<T>(s.weight_numel()), db1 = guarded_garbage<T>(s.c_out);
  cpu::depthwise_conv2d_forward<T>(s, xt.data(), wt.data(), bt.data(), y.data());
  cpu::depthwise_conv2d_forward<T>(s, xt.data(), wt.data(), nullptr, y0.data());
  cpu::depthwise_conv2d_backward_data<T>(s, dyt.data(), wt.data(), dx.data());
  cpu::depthwise_conv2d_backward_weight<T>(s, xt.data(), dyt.data(), dw.data(), db.data());
  cpu::depthwise_conv2d_backward_weight<T>(s, xt.data(), dyt.data(), dw1.data(), nullptr);
  cpu::depthwise_conv2d_backward_weight<T>(s, xt.data(), dyt.data(), nullptr, db1.data());
  omp_set_num_threads(saved);
  EXPECT_TRUE(guard_intact(y, s.output_numel())) << "forward";
  EXPECT_TRUE(guard_intact(y0, s.output_numel())) << "forward without bias";
  EXPECT_TRUE(guard_intact(dx, s.input_numel())) << "backward data";
  EXPECT_TRUE(guard_intact(dw, s.weight_numel())) << "backward weight";
  EXPECT_TRUE(guard_intact(db, s.c_out)) << "backward bias";
  EXPECT_TRUE(guard_intact(dw1, s.weight_numel())) << "backward weight without bias";
  EXPECT_TRUE(guard_intact(db1, s.c_out)) << "backward bias without weight";
  auto d = [](const std::vector<T>& v, std::int64_t n) { return head(v, n); };
  return {d(y, s.output_numel()), d(y0, s.output_numel()), d(dx, s.input_numel()), d(dw, s.weight_numel()),
          d(db, s.c_out),         d(dw1, s.weight_numel()),  d(db1, s.c_out)};
}

class DepthwiseFast : public ::testing::TestWithParam<DwCase> {
 protected:
  template <typename T>
  void check() {
    const Conv2dShape s = make_shape(GetParam());
    const auto x = t::random_vector(s.input_numel(), 101), w = t::random_vector(s.weight_numel(), 102);
    const auto b = t::random_vector(s.c_out, 103, 0.5, 1.5);
    const auto dy = t::random_vector(s.output_numel(), 104);
    const auto y_ref = t::ref_conv2d_forward(s, x, w, &b), y0_ref = t::ref_conv2d_forward(s, x, w, nullptr);
    std::vector<double> dx_ref, dw_ref, db_ref;
    t::ref_conv2d_backward(s, x, w, dy, dx_ref, dw_ref, db_ref);
    // The references are exact in double; the float kernels see float-rounded inputs, hence the float
    // tolerance of close_to_reference.
    const Outputs<T> one = run_kernels<T>(s, x, w, b, dy, 1);
    EXPECT_TRUE(t::close_to_reference(one.y, y_ref)) << "forward";
    EXPECT_TRUE(t::close_to_reference(one.y_nobias, y0_ref)) << "forward without bias";
    EXPECT_TRUE(t::close_to_reference(one.dx, dx_ref)) << "backward data";
    EXPECT_TRUE(t::close_to_reference(one.dw, dw_ref)) << "backward weight";
    EXPECT_TRUE(t::close_to_reference(one.db, db_ref)) << "backward bias";
    EXPECT_TRUE(bit_equal(one.dw_alone, one.dw)) << "dw differs when dbias is not requested";
    EXPECT_TRUE(bit_equal(one.db_alone, one.db)) << "dbias differs when dw is not requested";
    const Outputs<T> two = run_kernels<T>(s, x, w, b, dy, 2);
    EXPECT_TRUE(bit_equal(two.y, one.y)) << "forward depends on the thread count";
    EXPECT_TRUE(bit_equal(two.dx, one.dx)) << "backward data depends on the thread count";
    EXPECT_TRUE(bit_equal(two.dw, one.dw)) << "backward weight depends on the thread count";
    EXPECT_TRUE(bit_equal(two.db, one.db)) << "backward bias depends on the thread count";
  }
};

TEST_P(DepthwiseFast, FloatMatchesReference) { check<float>(); }
TEST_P(DepthwiseFast, DoubleMatchesReference) { check<double>(); }

// efficientnet_b0's depthwise convs (channels, input map, kernel, stride) at 32 px and 64 px inputs, with a
// small batch (the kernels do not special-case the batch size), in both padding conventions.
std::vector<DwCase> b0_cases() {
  struct B0 {
    std::int64_t c, map, k, stride;
  };
  const B0 convs[] = {{32, 16, 3, 1}, {96, 16, 3, 2}, {144, 8, 3, 1},  {144, 8, 5, 2},  {240, 4, 5, 1},
                      {240, 4, 3, 2}, {480, 2, 3, 1}, {480, 2, 5, 1},  {672, 2, 5, 1},  {672, 2, 5, 2},
                      {1152, 1, 5, 1}, {1152, 1, 3, 1}};
  std::vector<DwCase> v;
  for (std::int64_t scale : {1, 2})
    for (bool same : {false, true})
      for (const B0& b : convs) {
        const std::int64_t m = b.map * scale;
        v.push_back({"b0_img" + std::to_string(32 * scale) + (same ? "_same" : "_sym") + "_c" +
                         std::to_string(b.c) + "_" + std::to_string(m) + "x" + std::to_string(m) + "_k" +
                         std::to_string(b.k) + "_s" + std::to_string(b.stride),
                     2, b.c, m, m, b.k, b.stride, same});
      }
  return v;
}

INSTANTIATE_TEST_SUITE_P(EfficientNetB0, DepthwiseFast, ::testing::ValuesIn(b0_cases()),
                         [](const ::testing::TestParamInfo<DwCase>& info) { return info.param.name; });

INSTANTIATE_TEST_SUITE_P(
    Awkward, DepthwiseFast,
    ::testing::Values(DwCase{"partial_lane_block_c20_5x5_k3_s1", 3, 20, 5, 5, 3, 1, false},
                      DwCase{"partial_lane_block_c7_3x3_k5_s1_same", 2, 7, 3, 3, 5, 1, true},
                      DwCase{"odd_7x7_k3_s2_same", 2, 24, 7, 7, 3, 2, true},
                      DwCase{"odd_5x5_k5_s2_same", 2, 24, 5, 5, 5, 2, true},
                      DwCase{"odd_9x9_k5_s2_sym", 2, 17, 9, 9, 5, 2, false},
                      DwCase{"odd_3x3_k3_s2_same", 3, 16, 3, 3, 3, 2, true},
                      DwCase{"map1x1_k5_s2_same", 2, 32, 1, 1, 5, 2, true},
                      DwCase{"map2x2_k5_s1_same", 2, 40, 2, 2, 5, 1, true},
                      DwCase{"nonsquare_3x11_k3_s1", 2, 16, 3, 11, 3, 1, false},
                      DwCase{"nonsquare_6x1_k5_s2_same", 2, 16, 6, 1, 5, 2, true},
                      DwCase{"wide_17x40_k3_s1", 2, 16, 17, 40, 3, 1, false},
                      DwCase{"wide_15x37_k5_s2_same", 2, 16, 15, 37, 5, 2, true},
                      DwCase{"large_57x57_k3_s2_same", 1, 16, 57, 57, 3, 2, true},
                      DwCase{"dilation2_9x9_k3", 2, 16, 9, 9, 3, 1, false, 1, 2},
                      DwCase{"multiplier2_6x6_k3", 2, 8, 6, 6, 3, 1, false, 2},
                      DwCase{"multiplier2_2x2_k5_s2", 2, 8, 2, 2, 5, 2, true, 2}),
    [](const ::testing::TestParamInfo<DwCase>& info) { return info.param.name; });

}  // namespace
