// Convolution results do not depend on the thread count: the per-image task paths (im2col and 1x1 GEMMs on
// OpenMP threads with single-threaded BLAS, weight gradients summed in fixed chunks of images) must give
// bit-identical outputs with 1 and 2 threads, for forward, backward-data and backward-weight — the property the
// exact-resume tests rely on when a run is resumed on another machine with the same thread count, and what a
// user expects from set_num_threads. Also checks the task path against the naive double reference.
#include <gtest/gtest.h>

#include <omp.h>

#include <array>
#include <vector>

#include "conv/conv_test_util.hpp"
#include "kernels/cpu/conv2d.hpp"

namespace {

namespace cpu = arclight::kernels::cpu;
namespace t = arclight::test;
using arclight::kernels::Conv2dParams;
using arclight::kernels::Conv2dShape;

struct Outputs {
  std::vector<float> y, dx, dw, db;
};

Outputs run(const Conv2dShape& s, int threads, const std::vector<float>& x, const std::vector<float>& w,
            const std::vector<float>& b, const std::vector<float>& dy) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  Outputs o{t::garbage<float>(s.output_numel()), t::garbage<float>(s.input_numel()), t::garbage<float>(s.weight_numel()),
            t::garbage<float>(s.c_out)};
  cpu::conv2d_forward<float>(s, x.data(), w.data(), b.data(), o.y.data());
  cpu::conv2d_backward_data<float>(s, dy.data(), w.data(), o.dx.data());
  cpu::conv2d_backward_weight<float>(s, x.data(), dy.data(), o.dw.data(), o.db.data());
  omp_set_num_threads(saved);
  return o;
}

Conv2dShape shape(std::int64_t n, std::int64_t c_in, std::int64_t hw, std::int64_t c_out, std::int64_t k,
                  std::int64_t stride, std::int64_t groups) {
  Conv2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = k / 2;
  p.groups = groups;
  const std::array<std::int64_t, 4> in{n, c_in, hw, hw};
  const std::array<std::int64_t, 4> wt{c_out, c_in / groups, k, k};
  return cpu::make_conv2d_shape(in, wt, p, c_out);
}

}  // namespace

TEST(ConvThreads, OneAndTwoThreadsGiveBitIdenticalResults) {
  const std::vector<Conv2dShape> shapes = {
      shape(9, 8, 14, 16, 3, 1, 1),    // im2col, image tasks, 9 images in 8 weight-gradient chunks
      shape(5, 6, 9, 8, 3, 2, 2),      // grouped, strided im2col
      shape(12, 24, 8, 40, 1, 1, 1),   // 1x1 per-image GEMMs (8x8 maps)
      shape(16, 32, 2, 24, 1, 1, 1),   // 1x1 on 2x2 maps: batch folded
      shape(16, 48, 1, 20, 1, 1, 1),   // 1x1 on 1x1 maps: one [n, c] GEMM
      shape(6, 16, 10, 16, 5, 2, 16),  // depthwise
  };
  for (const Conv2dShape& s : shapes) {
    SCOPED_TRACE(::testing::Message() << "n " << s.n << " c_in " << s.c_in << " h " << s.h << " c_out " << s.c_out
                                      << " k " << s.kh << " stride " << s.stride_h << " groups " << s.groups);
    const auto x = t::cast_vector<float>(t::random_vector(s.input_numel(), 11));
    const auto w = t::cast_vector<float>(t::random_vector(s.weight_numel(), 12));
    const auto b = t::cast_vector<float>(t::random_vector(s.c_out, 13));
    const auto dy = t::cast_vector<float>(t::random_vector(s.output_numel(), 14));
    const Outputs one = run(s, 1, x, w, b, dy), two = run(s, 2, x, w, b, dy);
    EXPECT_EQ(one.y, two.y) << "forward";
    EXPECT_EQ(one.dx, two.dx) << "backward data";
    EXPECT_EQ(one.dw, two.dw) << "backward weight";
    EXPECT_EQ(one.db, two.db) << "backward bias";
    // And right: against the naive reference in double.
    const auto xd = t::random_vector(s.input_numel(), 11), wd = t::random_vector(s.weight_numel(), 12),
               bd = t::random_vector(s.c_out, 13), dyd = t::random_vector(s.output_numel(), 14);
    std::vector<double> dx_ref, dw_ref, db_ref;
    t::ref_conv2d_backward(s, xd, wd, dyd, dx_ref, dw_ref, db_ref);
    EXPECT_TRUE(t::close_to_reference(two.y, t::ref_conv2d_forward(s, xd, wd, &bd))) << "forward vs reference";
    EXPECT_TRUE(t::close_to_reference(two.dx, dx_ref)) << "backward data vs reference";
    EXPECT_TRUE(t::close_to_reference(two.dw, dw_ref)) << "backward weight vs reference";
    EXPECT_TRUE(t::close_to_reference(two.db, db_ref)) << "backward bias vs reference";
  }
}
