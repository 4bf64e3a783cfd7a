// Convolutions whose kernel is wider than the feature map (EfficientNet's 5x5 depthwise convs on the 1x1
// maps of a 32 px input, a 7x7 on 2x2): regression tests for the out-of-row writes that made multi-threaded
// forwards non-deterministic. detail::valid_range returned a first valid output column past out_w for taps
// that never touch the input; the depthwise forward then wrote the bias into [out_w, lo) — the first
// elements of the NEXT output plane (owned by another thread: a race) or past the end of y. Every kernel here
// writes into a NaN-prefilled output followed by a guard zone that must stay untouched, and must match the
// naive double reference; the multi-threaded forward must be bit-identical across repeats.
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
namespace cpu = arclight::kernels::cpu;
namespace t = arclight::test;

using t::guard_intact;
using t::guarded_garbage;
using t::head;

struct TinyCase {
  std::string name;
  std::int64_t n, c, h, w, k, stride, pad;
  bool depthwise;
};
void PrintTo(const TinyCase& c, std::ostream* os) { *os << c.name; }

Conv2dShape make_shape(const TinyCase& tc) {
  Conv2dParams p;
  p.stride_h = p.stride_w = tc.stride;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = tc.pad;
  p.groups = tc.depthwise ? tc.c : 1;
  const std::int64_t in[4] = {tc.n, tc.c, tc.h, tc.w};
  const std::int64_t wt[4] = {tc.c, tc.depthwise ? 1 : tc.c, tc.k, tc.k};
  return cpu::make_conv2d_shape(in, wt, p, tc.c, "test");
}


class TinyMapConv : public ::testing::TestWithParam<TinyCase> {};

TEST_P(TinyMapConv, ValidRangeStaysInsideTheRow) {
  const Conv2dShape s = make_shape(GetParam());
  for (std::int64_t j = 0; j < s.kw; ++j) {
    std::int64_t lo = -1, hi = -1;
    cpu::detail::valid_range(s.out_w, s.w, s.stride_w, j * s.dilation_w - s.pad_left, lo, hi);
    EXPECT_LE(0, lo) << "tap " << j;
    EXPECT_LE(lo, hi) << "tap " << j;
    EXPECT_LE(hi, s.out_w) << "tap " << j;
  }
}

TEST_P(TinyMapConv, ForwardMatchesReferenceAndStaysInBounds) {
  const TinyCase& tc = GetParam();
  const Conv2dShape s = make_shape(tc);
  const auto x = t::random_vector(s.input_numel(), 11), w = t::random_vector(s.weight_numel(), 12);
  const auto b = t::random_vector(s.c_out, 13, 0.5, 1.5);  // a non-zero bias: a stray bias write shows
  const auto want = t::ref_conv2d_forward(s, x, w, &b);
  for (int threads : {1, 2}) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    auto yf = guarded_garbage<float>(s.output_numel());
    const auto xf = t::cast_vector<float>(x), wf = t::cast_vector<float>(w), bf = t::cast_vector<float>(b);
    cpu::conv2d_forward<float>(s, xf.data(), wf.data(), bf.data(), yf.data());
    auto yd = guarded_garbage<double>(s.output_numel());
    cpu::conv2d_forward<double>(s, x.data(), w.data(), b.data(), yd.data());
    omp_set_num_threads(saved);
    EXPECT_TRUE(guard_intact(yf, s.output_numel())) << threads << " threads, float";
    EXPECT_TRUE(guard_intact(yd, s.output_numel())) << threads << " threads, double";
    EXPECT_TRUE(t::close_to_reference(head(yf, s.output_numel()), want)) << threads << " threads";
    EXPECT_TRUE(t::close_to_reference(head(yd, s.output_numel()), want)) << threads << " threads";
  }
}

TEST_P(TinyMapConv, BackwardMatchesReferenceAndStaysInBounds) {
  const Conv2dShape s = make_shape(GetParam());
  const auto x = t::random_vector(s.input_numel(), 21), w = t::random_vector(s.weight_numel(), 22);
  const auto dy = t::random_vector(s.output_numel(), 23);
  std::vector<double> dx_ref, dw_ref, db_ref;
  t::ref_conv2d_backward(s, x, w, dy, dx_ref, dw_ref, db_ref);
  auto dx = guarded_garbage<double>(s.input_numel());
  auto dw = guarded_garbage<double>(s.weight_numel());
  auto db = guarded_garbage<double>(s.c_out);
  cpu::conv2d_backward_data<double>(s, dy.data(), w.data(), dx.data());
  cpu::conv2d_backward_weight<double>(s, x.data(), dy.data(), dw.data(), db.data());
  EXPECT_TRUE(guard_intact(dx, s.input_numel()));
  EXPECT_TRUE(guard_intact(dw, s.weight_numel()));
  EXPECT_TRUE(guard_intact(db, s.c_out));
  EXPECT_TRUE(t::close_to_reference(head(dx, s.input_numel()), dx_ref));
  EXPECT_TRUE(t::close_to_reference(head(dw, s.weight_numel()), dw_ref));
  EXPECT_TRUE(t::close_to_reference(head(db, s.c_out), db_ref));
}

INSTANTIATE_TEST_SUITE_P(
    KernelWiderThanMap, TinyMapConv,
    ::testing::Values(TinyCase{"dw_1x1_k5_p2", 2, 24, 1, 1, 5, 1, 2, true},
                      TinyCase{"dw_2x2_k7_p3", 2, 16, 2, 2, 7, 1, 3, true},
                      TinyCase{"dw_1x3_k5_p2", 1, 8, 1, 3, 5, 1, 2, true},
                      TinyCase{"dw_2x2_k5_s2_p2", 2, 16, 2, 2, 5, 2, 2, true},
                      TinyCase{"im2col_1x1_k5_p2", 2, 4, 1, 1, 5, 1, 2, false},
                      TinyCase{"im2col_2x2_k7_p3", 1, 3, 2, 2, 7, 1, 3, false}),
    [](const ::testing::TestParamInfo<TinyCase>& info) { return info.param.name; });

// The race itself: with 2 threads the planes split between threads, and a stray write into the first element
// of a plane owned by the other thread lands before or after that thread's own write depending on timing.
// 200 repeats into fresh NaN buffers must all be bit-identical to the single-threaded result.
TEST(TinyMapConvThreads, DepthwiseForwardIsBitStableWithTwoThreads) {
  const TinyCase tc{"dw_1x1_k5_p2_many", 4, 96, 1, 1, 5, 1, 2, true};
  const Conv2dShape s = make_shape(tc);
  const auto x = t::cast_vector<float>(t::random_vector(s.input_numel(), 31));
  const auto w = t::cast_vector<float>(t::random_vector(s.weight_numel(), 32));
  const auto b = t::cast_vector<float>(t::random_vector(s.c_out, 33, 0.5, 1.5));
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  auto ref = guarded_garbage<float>(s.output_numel());
  cpu::depthwise_conv2d_forward<float>(s, x.data(), w.data(), b.data(), ref.data());
  omp_set_num_threads(2);
  int differing = 0;
  for (int r = 0; r < 200; ++r) {
    auto y = guarded_garbage<float>(s.output_numel());
    cpu::depthwise_conv2d_forward<float>(s, x.data(), w.data(), b.data(), y.data());
    if (std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)) != 0) ++differing;
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(differing, 0) << "of 200 two-thread forwards differ from the one-thread result";
  EXPECT_TRUE(guard_intact(ref, s.output_numel()));
}

}  // namespace
