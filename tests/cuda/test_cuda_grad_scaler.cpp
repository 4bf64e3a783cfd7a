// Dynamic loss scaling: the GradScaler policy (include/arclight/cuda/grad_scaler.hpp) on the host, in every
// build, and the device unscale (kernels/cuda/amp.cuh: amp_unscale) against the CPU product g * (1/S) with
// inf and NaN planted in chosen tensors, on a GPU (skipped without one).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "arclight/cuda/grad_scaler.hpp"
#include "harness.hpp"

namespace {

namespace ac = arclight::cuda;

TEST(GradScaler, BacksOffSkipsAndGrows) {
  ac::GradScalerConfig cfg;
  cfg.init_scale = 1024.0;
  cfg.growth_interval = 3;
  ac::GradScaler s(cfg);
  EXPECT_EQ(s.scale(), 1024.0);
  EXPECT_TRUE(s.update(false));
  EXPECT_TRUE(s.update(false));
  EXPECT_EQ(s.scale(), 1024.0);
  EXPECT_EQ(s.growth_tracker(), 2);
  // A bad step: skipped, scale halved, the good-step count restarts.
  EXPECT_FALSE(s.update(true));
  EXPECT_EQ(s.scale(), 512.0);
  EXPECT_EQ(s.growth_tracker(), 0);
  EXPECT_EQ(s.skipped_steps(), 1);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(s.update(false));
  EXPECT_EQ(s.scale(), 512.0);
  EXPECT_TRUE(s.update(false));  // the 3rd good step in a row grows the scale
  EXPECT_EQ(s.scale(), 1024.0);
  EXPECT_EQ(s.growth_tracker(), 0);
  // Two bad steps in a row back off twice.
  EXPECT_FALSE(s.update(true));
  EXPECT_FALSE(s.update(true));
  EXPECT_EQ(s.scale(), 256.0);
  EXPECT_EQ(s.skipped_steps(), 3);
  // Checkpoint round trip.
  const ac::GradScalerState st = s.state();
  ac::GradScaler r(cfg);
  r.load_state(st);
  EXPECT_EQ(r.scale(), 256.0);
  EXPECT_EQ(r.growth_tracker(), 0);
  EXPECT_ERROR_WITH(r.load_state(ac::GradScalerState{-1.0, 0}), "GradScaler::load_state", "finite scale > 0");
}

TEST(GradScaler, GrowthStopsBelowFloatMax) {
  ac::GradScalerConfig cfg;
  cfg.init_scale = double(std::numeric_limits<float>::max()) / 1.5;
  cfg.growth_interval = 1;
  ac::GradScaler s(cfg);
  EXPECT_TRUE(s.update(false));
  EXPECT_EQ(s.scale(), cfg.init_scale) << "growing would overflow float: the scale must stay";
  EXPECT_TRUE(std::isfinite(float(s.scale())));
}

TEST(GradScaler, DisabledTakesEveryGoodStepAtScaleOne) {
  ac::GradScalerConfig cfg;
  cfg.enabled = false;
  ac::GradScaler s(cfg);
  EXPECT_EQ(s.scale(), 1.0);
  EXPECT_TRUE(s.update(false));
  EXPECT_FALSE(s.update(true));
  EXPECT_EQ(s.scale(), 1.0);
}

TEST(GradScaler, RejectsBadConfigs) {
  ac::GradScalerConfig c;
  c.growth_factor = 1.0;
  EXPECT_ERROR_WITH(ac::GradScaler{c}, "GradScaler", "growth_factor > 1, got 1");
  c = {};
  c.backoff_factor = 1.0;
  EXPECT_ERROR_WITH(ac::GradScaler{c}, "GradScaler", "backoff_factor in (0, 1), got 1");
  c = {};
  c.init_scale = 0.0;
  EXPECT_ERROR_WITH(ac::GradScaler{c}, "GradScaler", "init_scale > 0, got 0");
  c = {};
  c.growth_interval = 0;
  EXPECT_ERROR_WITH(ac::GradScaler{c}, "GradScaler", "growth_interval >= 1, got 0");
}

#ifdef ARCLIGHT_WITH_CUDA

TEST(AmpUnscale, Validation) {
  namespace kc = arclight::kernels::cuda;
  kc::AmpTensor t;
  t.count = 5;
  float* fake = reinterpret_cast<float*>(std::uintptr_t(256));
  EXPECT_ERROR_WITH(kc::amp_unscale(&t, 1, fake, fake, nullptr), "cuda::amp_unscale",
                    "tensor 0: expected non-null data for 5 floats");
  t.data = fake;
  t.count = -1;
  EXPECT_ERROR_WITH(kc::amp_unscale(&t, 1, fake, fake, nullptr), "cuda::amp_unscale", "tensor 0: expected count >= 0");
  t.count = 5;
  EXPECT_ERROR_WITH(kc::amp_unscale(&t, 1, nullptr, fake, nullptr), "cuda::amp_unscale",
                    "expected non-null inv_scale and found_inf");
}

// Unscales a set of gradient tensors (70 of them: two launches; sizes 0, 1, 3, odd, large; misaligned starts)
// and compares with the CPU. `plant` gives (tensor, element, value) to write before unscaling.
struct Plant {
  std::size_t tensor, element;
  float value;
};

void run_unscale_case(const std::vector<Plant>& plants, bool expect_inf) {
  if (!ac::available()) GTEST_SKIP() << "CUDA test skipped: " << ac::availability().reason;
  std::mt19937_64 g(2024 + plants.size());
  std::normal_distribution<float> nd(0.f, 1000.f);
  const std::size_t tensors = 70;
  std::vector<std::size_t> sizes(tensors), offsets(tensors);
  std::size_t total = 0;
  for (std::size_t t = 0; t < tensors; ++t) {
    sizes[t] = t == 0 ? 0 : t == 1 ? 1 : t == 2 ? 3 : t == 3 ? 300001 : 1 + std::size_t(g() % 5000);
    offsets[t] = total + (t % 3);  // starts off 16-byte alignment for some tensors
    total = offsets[t] + sizes[t] + 3;
  }
  std::vector<float> host(total, 7.f);
  for (std::size_t t = 0; t < tensors; ++t)
    for (std::size_t i = 0; i < sizes[t]; ++i) host[offsets[t] + i] = nd(g);
  for (const Plant& p : plants) host[offsets[p.tensor] + p.element] = p.value;
  ac::DeviceBuffer<float> dev(host);
  std::vector<arclight::kernels::cuda::AmpTensor> list(tensors);
  for (std::size_t t = 0; t < tensors; ++t) list[t] = {dev.data() + offsets[t], std::int64_t(sizes[t])};

  ac::GradScalerConfig cfg;
  cfg.init_scale = 4096.0;
  ac::GradScaler scaler(cfg);
  const bool found = scaler.unscale(list);
  EXPECT_EQ(found, expect_inf);
  EXPECT_EQ(scaler.update(found), !expect_inf);
  EXPECT_EQ(scaler.scale(), expect_inf ? 2048.0 : 4096.0);

  const std::vector<float> got = dev.download();
  const float inv = float(1.0 / 4096.0);
  std::size_t bad = 0;
  for (std::size_t t = 0; t < tensors; ++t) {
    for (std::size_t i = offsets[t]; i < offsets[t] + sizes[t]; ++i) {
      const float want = host[i] * inv;
      const bool same = std::isnan(want) ? std::isnan(got[i]) : got[i] == want;
      if (!same && bad++ < 5)
        ADD_FAILURE() << "tensor " << t << " element " << i - offsets[t] << ": got " << got[i] << ", want " << want;
    }
    // The gaps between tensors are untouched.
    const std::size_t gap_end = t + 1 < tensors ? offsets[t + 1] : total;
    for (std::size_t i = offsets[t] + sizes[t]; i < gap_end; ++i)
      if (got[i] != 7.f && bad++ < 5) ADD_FAILURE() << "wrote outside tensor " << t << " at " << i;
  }
  EXPECT_EQ(bad, 0u);
}

TEST(AmpUnscale, FiniteGradientsAreScaledExactly) { run_unscale_case({}, false); }
TEST(AmpUnscale, InfInTheLastTensorOfTheSecondLaunch) {
  run_unscale_case({{69, 0, std::numeric_limits<float>::infinity()}}, true);
}
TEST(AmpUnscale, NanInTheVectorBodyOfALargeTensor) {
  run_unscale_case({{3, 150000, std::numeric_limits<float>::quiet_NaN()}}, true);
}
TEST(AmpUnscale, NegativeInfInAOneElementTensor) {
  run_unscale_case({{1, 0, -std::numeric_limits<float>::infinity()}}, true);
}
TEST(AmpUnscale, FlagIsNotClearedByACleanCall) {
  if (!ac::available()) GTEST_SKIP() << "CUDA test skipped: " << ac::availability().reason;
  namespace kc = arclight::kernels::cuda;
  ac::DeviceBuffer<float> g(std::vector<float>{1.f, 2.f, 3.f});
  ac::DeviceBuffer<float> flags(std::vector<float>{0.5f, 1.f});  // inv_scale 0.5, found_inf already raised
  kc::AmpTensor t{g.data(), 3};
  kc::amp_unscale(&t, 1, flags.data(), flags.data() + 1, nullptr);
  EXPECT_EQ(flags.download()[1], 1.f);
  EXPECT_EQ(g.download(), (std::vector<float>{0.5f, 1.f, 1.5f}));
}

#endif  // ARCLIGHT_WITH_CUDA

}  // namespace
