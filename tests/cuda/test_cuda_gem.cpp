// GeM pooling on the GPU (kernels/cuda/gem.cuh) against the CPU kernel (kernels/cpu/gem.hpp, run in double
// as the reference) on fresh random inputs, with outputs pre-filled with NaN garbage. Shapes cover the staged
// paths: thread-per-plane (hw <= 64: odd hw stored unpadded, even hw padded to an odd stride, partial last
// tiles, more tiles than the grid so blocks loop, x and gx off 16-byte alignment so the scalar staging runs),
// warp-per-plane (64 < hw <= 4096, a plane exactly filling a tile) and block-per-plane (hw > 4096).
#include <cstring>
#include <ostream>
#include <vector>

#include "cuda_test_util.hpp"
#include "kernels/cpu/gem.hpp"
#include "kernels/cuda/launchers.hpp"

namespace kc = arclight::kernels::cuda;
namespace ak = arclight::kernels;
using namespace arclight::testing::cuda;
using arclight::cuda::DeviceBuffer;

namespace {

struct GemCase {
  ak::GemShape shape;
  float p;
  int x_offset = 0;   // floats x starts past its (256-byte-aligned) allocation
  int gx_offset = 0;  // floats gx starts past its allocation
};

void PrintTo(const GemCase& c, std::ostream* os) {
  *os << "n" << c.shape.n << "_c" << c.shape.c << "_hw" << c.shape.hw << "_p" << c.p;
  if (c.x_offset || c.gx_offset) *os << "_off" << c.x_offset << "_" << c.gx_offset;
}

class CudaGem : public ::testing::TestWithParam<GemCase> {};

TEST_P(CudaGem, MatchesCpuForwardAndBackward) {
  ARCLIGHT_REQUIRE_GPU();
  const GemCase c = GetParam();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  const std::size_t planes = std::size_t(c.shape.n * c.shape.c), total = planes * std::size_t(c.shape.hw);
  const float eps = 1e-6f;
  // Post-ReLU-like activations: mostly positive, some below eps (clamped, no gradient).
  std::vector<float> x = uniform(total, g, -0.2f, 2.5f);
  std::vector<float> gy = normal(planes, g);

  // CPU reference in double.
  std::vector<double> y_ref(planes), gx_ref(total);
  double gp_ref = 0;
  ak::cpu::gem_forward<double>(c.shape, to_double(x).data(), c.p, eps, y_ref.data());
  ak::cpu::gem_backward<double>(c.shape, to_double(x).data(), to_double(gy).data(), c.p, eps, gx_ref.data(), &gp_ref);

  std::vector<float> x_padded(std::size_t(c.x_offset), NAN);
  x_padded.insert(x_padded.end(), x.begin(), x.end());
  DeviceBuffer<float> dx_buf(x_padded), dgy(gy), dp(std::vector<float>{c.p});
  const float* xp = dx_buf.data() + c.x_offset;
  const std::size_t go = std::size_t(c.gx_offset);
  DeviceBuffer<float> dy = garbage(planes), dgx = garbage(total + go), dgp = garbage(1);
  DeviceBuffer<float> ws = garbage(std::size_t(kc::gem_backward_workspace_floats(c.shape)));
  kc::gem_forward(c.shape, xp, dp.data(), eps, dy.data(), nullptr);
  kc::gem_backward(c.shape, xp, dgy.data(), dp.data(), eps, dgx.data() + go, dgp.data(), ws.data(), nullptr);
  EXPECT_TRUE(near_all(dy.download(), y_ref, 2e-5, 1e-6, "y"));
  std::vector<float> gx_all = dgx.download();
  for (std::size_t i = 0; i < go; ++i) EXPECT_TRUE(std::isnan(gx_all[i])) << "gx written before its start, at " << i;
  const std::vector<float> gx_gpu(gx_all.begin() + std::ptrdiff_t(go), gx_all.end());
  EXPECT_TRUE(near_all(gx_gpu, gx_ref, 1e-4, 1e-5 * std::max(1.0, max_abs(gx_ref)), "gx"));
  // dL/dp sums terms that cancel per plane; float sums carry ~1e-7 relative error per term.
  double scale = 0;
  for (std::size_t i = 0; i < planes; ++i) scale += std::abs(gy[i]) * y_ref[i];
  const float gp = dgp.download()[0];
  EXPECT_NEAR(gp, gp_ref, 2e-6 * scale + 1e-5) << "gp";

  // Bitwise reproducible dL/dp, and each output on its own.
  DeviceBuffer<float> dgp2 = garbage(1), dgx2 = garbage(total + go);
  kc::gem_backward(c.shape, xp, dgy.data(), dp.data(), eps, nullptr, dgp2.data(), ws.data(), nullptr);
  const float gp2 = dgp2.download()[0];
  EXPECT_EQ(std::memcmp(&gp, &gp2, sizeof(float)), 0) << gp << " vs " << gp2;
  kc::gem_backward(c.shape, xp, dgy.data(), dp.data(), eps, dgx2.data() + go, nullptr, nullptr, nullptr);
  const std::vector<float> gx2_all = dgx2.download();
  EXPECT_EQ(std::memcmp(gx2_all.data() + go, gx_all.data() + go, total * sizeof(float)), 0)
      << "gx alone differs from gx computed with gp";
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaGem,
                         ::testing::Values(GemCase{{2, 3, 49}, 3.f}, GemCase{{4, 640, 49}, 3.f},
                                           GemCase{{3, 5, 1}, 2.f}, GemCase{{8, 300, 13}, 1.5f},
                                           GemCase{{2, 70, 64}, 4.5f}, GemCase{{1, 3, 4096}, 3.f},
                                           GemCase{{2, 3, 5000}, 3.f}, GemCase{{64, 1280, 49}, 3.f},
                                           // thread-per-plane: padded even hw, odd hw, misaligned x / gx
                                           GemCase{{3, 100, 16}, 3.f}, GemCase{{5, 77, 36}, 2.5f},
                                           GemCase{{2, 129, 64}, 3.f, 1, 3}, GemCase{{4, 300, 49}, 3.f, 2, 2},
                                           GemCase{{3, 50, 10}, 3.f, 0, 1}, GemCase{{2, 40, 65}, 3.f, 1, 1},
                                           // more tiles (of 128 planes) than the 8192-block grid: blocks loop
                                           GemCase{{1, 1100000, 1}, 3.f}, GemCase{{2, 530000, 3}, 2.f, 3, 1}));

TEST(CudaGemEdge, EmptyBatchZeroesGradP) {
  ARCLIGHT_REQUIRE_GPU();
  DeviceBuffer<float> dp(std::vector<float>{3.f}), dgp = garbage(1);
  kc::gem_backward(ak::GemShape{0, 8, 49}, nullptr, nullptr, dp.data(), 1e-6f, nullptr, dgp.data(), nullptr, nullptr);
  EXPECT_EQ(dgp.download()[0], 0.f);
}

TEST(CudaGemEdge, NanInputPropagates) {
  ARCLIGHT_REQUIRE_GPU();
  std::vector<float> x(2 * 49, 1.f);
  x[60] = NAN;  // plane 1
  DeviceBuffer<float> dx(x), dp(std::vector<float>{3.f}), dy = garbage(2);
  kc::gem_forward(ak::GemShape{1, 2, 49}, dx.data(), dp.data(), 1e-6f, dy.data(), nullptr);
  const auto y = dy.download();
  EXPECT_NEAR(y[0], 1.f, 1e-6f);
  EXPECT_TRUE(std::isnan(y[1]));
}

}  // namespace
