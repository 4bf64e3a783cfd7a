// Determinism of multi-threaded EfficientNet forwards (the regression behind "resume is exact" with 2
// threads). Root cause: kernels::cpu::detail::valid_range could return a first valid output column past the
// row's end for a tap that never reaches the input (a 5x5 depthwise conv on a 1x1 map: EfficientNet-B0's
// stage 5 at 32 px), and the depthwise forward then wrote the bias into the first element of the NEXT output
// plane — owned by another OpenMP thread (a race: the result depended on timing) — or past the end of y.
// Here: eval forwards of the full efficientnet_b0 at 32 px (1x1 maps in stage 5 and 6) with 2 threads must be
// bit-identical to each other and to the 1-thread forward (the CPU kernels split work, never reductions,
// across threads in eval mode), with the allocator's cache on and off.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "arclight/models/registry.hpp"

namespace {

using namespace arclight;

std::vector<float> forward_once(models::Backbone& m, const Tensor& x) {
  NoGradGuard ng;
  return m.forward(x).to_vector<float>();
}

TEST(ModelDeterminism, EfficientNetB0At32pxIsBitStableAcrossThreadsAndRepeats) {
  Generator g(7);
  models::ModelOptions o;
  o.num_classes = 10;
  o.generator = &g;
  auto m = models::create_model("efficientnet_b0", o);
  m->eval();
  Generator gx(3);
  const Tensor x = randn({2, 3, 32, 32}, DType::f32, gx);
  const int saved = num_threads();
  set_num_threads(1);
  const std::vector<float> ref = forward_once(*m, x);
  set_num_threads(2);
  int differing = 0;
  for (bool caching : {true, false}) {
    host_allocator().set_caching(caching);
    for (int r = 0; r < 10; ++r) {
      const std::vector<float> y = forward_once(*m, x);
      ASSERT_EQ(y.size(), ref.size());
      if (std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)) != 0) ++differing;
    }
  }
  host_allocator().set_caching(true);
  set_num_threads(saved);
  EXPECT_EQ(differing, 0) << "of 20 two-thread forwards differ from the one-thread forward";
  for (float v : ref) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
