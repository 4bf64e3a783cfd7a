// GeM pooling on the GPU (kernels/cuda/gem.cuh) against the CPU kernel (kernels/cpu/gem.hpp, run in double
// as the reference) on fresh random inputs, with outputs pre-filled with NaN garbage. Shapes cover the staged
// path (many planes per tile, a plane exactly filling a tile) and the block-per-plane path (hw > 4096).
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
};

void PrintTo(const GemCase& c, std::ostream* os) {
  *os << "n" << c.shape.n << "_c" << c.shape.c << "_hw" << c.shape.hw << "_p" << c.p;
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

  DeviceBuffer<float> dx(x), dgy(gy), dp(std::vector<float>{c.p});
  DeviceBuffer<float> dy = garbage(planes), dgx = garbage(total), dgp = garbage(1);
  DeviceBuffer<float> ws = garbage(std::size_t(kc::gem_backward_workspace_floats(c.shape)));
  kc::gem_forward(c.shape, dx.data(), dp.data(), eps, dy.data(), nullptr);
  kc::gem_backward(c.shape, dx.data(), dgy.data(), dp.data(), eps, dgx.data(), dgp.data(), ws.data(), nullptr);
  EXPECT_TRUE(near_all(dy.download(), y_ref, 2e-5, 1e-6, "y"));
  EXPECT_TRUE(near_all(dgx.download(), gx_ref, 1e-4, 1e-5 * std::max(1.0, max_abs(gx_ref)), "gx"));
  // dL/dp sums terms that cancel per plane; float sums carry ~1e-7 relative error per term.
  double scale = 0;
  for (std::size_t i = 0; i < planes; ++i) scale += std::abs(gy[i]) * y_ref[i];
  const float gp = dgp.download()[0];
  EXPECT_NEAR(gp, gp_ref, 2e-6 * scale + 1e-5) << "gp";

  // Bitwise reproducible dL/dp, and each output on its own.
  DeviceBuffer<float> dgp2 = garbage(1), dgx2 = garbage(total);
  kc::gem_backward(c.shape, dx.data(), dgy.data(), dp.data(), eps, nullptr, dgp2.data(), ws.data(), nullptr);
  const float gp2 = dgp2.download()[0];
  EXPECT_EQ(std::memcmp(&gp, &gp2, sizeof(float)), 0) << gp << " vs " << gp2;
  kc::gem_backward(c.shape, dx.data(), dgy.data(), dp.data(), eps, dgx2.data(), nullptr, nullptr, nullptr);
  EXPECT_EQ(dgx2.download(), dgx.download());
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaGem,
                         ::testing::Values(GemCase{{2, 3, 49}, 3.f}, GemCase{{4, 640, 49}, 3.f},
                                           GemCase{{3, 5, 1}, 2.f}, GemCase{{8, 300, 13}, 1.5f},
                                           GemCase{{2, 70, 64}, 4.5f}, GemCase{{1, 3, 4096}, 3.f},
                                           GemCase{{2, 3, 5000}, 3.f}, GemCase{{64, 1280, 49}, 3.f}));

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
