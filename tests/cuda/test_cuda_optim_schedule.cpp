// The device learning-rate schedule (kernels/cuda/schedule.cuh) against kernels::schedule_lr on the host,
// and the fused multi-tensor SGD / AdamW steps (kernels/cuda/optim.cuh) against the CPU kernels
// (kernels/cpu/optim.hpp), over several steps, with more tensors than one launch takes (batching), empty and
// one-element tensors, and the lr read from device memory as a captured step would; and the multi-tensor
// Adaptive Gradient Clipping (agc_clip) against kernels::cpu::agc_clip.
#include <cmath>
#include <vector>

#include "cuda_test_util.hpp"
#include "harness.hpp"
#include "kernels/cpu/optim.hpp"
#include "kernels/cpu/schedule.hpp"
#include "kernels/cuda/launchers.hpp"

namespace kc = arclight::kernels::cuda;
namespace ak = arclight::kernels;
using namespace arclight::testing::cuda;
using arclight::cuda::DeviceBuffer;

namespace {

std::vector<ak::ScheduleConfig> schedules() {
  std::vector<ak::ScheduleConfig> v;
  ak::ScheduleConfig c;
  c.kind = ak::ScheduleKind::kCosine;
  c.base_lr = 0.1;
  c.warmup_t = 3;
  c.warmup_lr_init = 1e-4;
  c.t_initial = 30;
  c.lr_min = 1e-5;
  v.push_back(c);
  c.warmup_prefix = true;
  c.cycle_mul = 2.0;
  c.cycle_decay = 0.5;
  c.cycle_limit = 3;
  c.k_decay = 1.5;
  v.push_back(c);
  ak::ScheduleConfig s;
  s.kind = ak::ScheduleKind::kStep;
  s.base_lr = 0.05;
  s.decay_t = 7;
  s.decay_rate = 0.3;
  s.warmup_t = 2;
  v.push_back(s);
  return v;
}

TEST(CudaSchedule, ManyTimesMatchHost) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 g(seed);
  std::vector<double> t(2000);
  std::uniform_real_distribution<double> d(0.0, 250.0);
  for (auto& x : t) x = d(g);
  for (int i = 0; i < 50; ++i) t[std::size_t(i)] = double(i);  // integral steps, incl. the warm-up boundary
  for (const auto& cfg : schedules()) {
    DeviceBuffer<double> dt(t), dlr(t.size());
    dlr.fill_bytes(0xFF);
    kc::schedule_lr_many(cfg, dt.data(), std::int64_t(t.size()), dlr.data(), nullptr);
    const auto lr = dlr.download();
    std::vector<double> want(t.size());
    for (std::size_t i = 0; i < t.size(); ++i) want[i] = ak::schedule_lr(t[i], cfg);
    // Same formula in double; the device's cos/pow/log may differ from glibc's in the last bits.
    EXPECT_TRUE(near_all(lr, want, 1e-12, 1e-15, "schedule kind " + std::to_string(int(cfg.kind))));
  }
}

TEST(CudaSchedule, StepCounterAdvancesOnDevice) {
  ARCLIGHT_REQUIRE_GPU();
  const ak::ScheduleConfig cfg = schedules()[0];
  const std::int64_t steps_per_epoch = 4;
  DeviceBuffer<std::int64_t> step(std::vector<std::int64_t>{0});
  DeviceBuffer<float> lr(1);
  for (std::int64_t s = 0; s < 10; ++s) {
    lr.fill_bytes(0xFF);
    kc::schedule_lr_device(cfg, step.data(), steps_per_epoch, true, lr.data(), nullptr);
    EXPECT_FLOAT_EQ(lr.download()[0], float(ak::schedule_lr(double(s) / double(steps_per_epoch), cfg))) << "step " << s;
  }
  EXPECT_EQ(step.download()[0], 10);
  kc::schedule_lr_device(cfg, step.data(), 1, false, lr.data(), nullptr);
  EXPECT_EQ(step.download()[0], 10);
  EXPECT_FLOAT_EQ(lr.download()[0], float(ak::schedule_lr(10.0, cfg)));
}

// A set of parameter tensors with their state, on the host and on the device.
struct TensorSet {
  std::vector<std::vector<float>> p, g, b0, b1, b2;
  std::vector<DeviceBuffer<float>> dp, dg, db0, db1, db2;

  TensorSet(const std::vector<std::size_t>& sizes, std::mt19937_64& gen) {
    for (std::size_t n : sizes) {
      p.push_back(normal(n, gen));
      g.push_back(normal(n, gen, 0.1f));
      b0.push_back(std::vector<float>(n, 0.f));
      b1.push_back(std::vector<float>(n, 0.f));
      b2.push_back(std::vector<float>(n, 0.f));
    }
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      auto up = [](const std::vector<float>& v) {
        return v.empty() ? DeviceBuffer<float>(1) : DeviceBuffer<float>(v);
      };
      dp.push_back(up(p[i]));
      dg.push_back(up(g[i]));
      db0.push_back(up(b0[i]));
      db1.push_back(up(b1[i]));
      db2.push_back(up(b2[i]));
    }
  }
  std::vector<kc::OptimTensor> views() {
    std::vector<kc::OptimTensor> v;
    for (std::size_t i = 0; i < p.size(); ++i) {
      kc::OptimTensor t;
      t.param = dp[i].data();
      t.grad = dg[i].data();
      t.buf0 = db0[i].data();
      t.buf1 = db1[i].data();
      t.buf2 = db2[i].data();
      t.count = std::int64_t(p[i].size());
      v.push_back(t);
    }
    return v;
  }
  void new_grads(std::mt19937_64& gen) {
    for (std::size_t i = 0; i < g.size(); ++i) {
      g[i] = normal(g[i].size(), gen, 0.1f);
      if (!g[i].empty()) dg[i].upload(g[i]);
    }
  }
  void expect_match(const char* what) {
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (p[i].empty()) continue;
      EXPECT_TRUE(near_all(dp[i].download(), p[i], 1e-5, 1e-6, std::string(what) + " param " + std::to_string(i)));
      EXPECT_TRUE(near_all(db0[i].download(), b0[i], 1e-5, 1e-6, std::string(what) + " buf0 " + std::to_string(i)));
    }
  }
};

std::vector<std::size_t> tensor_sizes() {
  std::vector<std::size_t> s{0, 1, 3, 1000, 70000};
  for (int i = 0; i < 50; ++i) s.push_back(std::size_t(17 * i + 5));  // 55 tensors: two launches
  return s;
}

TEST(CudaOptim, SgdVariantsMatchCpu) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 gen(seed);
  std::vector<ak::SgdConfig> cfgs(3);
  cfgs[0].lr = 0.05;
  cfgs[1].lr = 0.05;
  cfgs[1].momentum = 0.9;
  cfgs[1].weight_decay = 1e-4;
  cfgs[1].nesterov = true;
  cfgs[2].lr = 0.02;
  cfgs[2].momentum = 0.8;
  cfgs[2].dampening = 0.1;
  cfgs[2].weight_decay = 5e-4;
  for (std::size_t ci = 0; ci < cfgs.size(); ++ci) {
    const ak::SgdConfig& cfg = cfgs[ci];
    TensorSet ts(tensor_sizes(), gen);
    DeviceBuffer<float> lr_dev(std::vector<float>{float(cfg.lr)});
    for (int step = 0; step < 3; ++step) {
      auto views = ts.views();
      // Step 2 reads the lr from device memory (as the schedule writes it).
      kc::sgd_step(views.data(), std::int64_t(views.size()), cfg, step == 0, step == 2 ? lr_dev.data() : nullptr,
                   nullptr);
      for (std::size_t i = 0; i < ts.p.size(); ++i)
        ak::cpu::sgd_step<float>(std::int64_t(ts.p[i].size()), ts.p[i].data(), ts.g[i].data(), ts.b0[i].data(),
                                 step == 0, cfg);
      ts.expect_match(("sgd config " + std::to_string(ci)).c_str());
      ts.new_grads(gen);
    }
  }
}

TEST(CudaOptim, AdamWVariantsMatchCpu) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 gen(seed);
  for (bool amsgrad : {false, true}) {
    ak::AdamWConfig cfg;
    cfg.lr = 2e-3;
    cfg.weight_decay = 0.05;
    cfg.amsgrad = amsgrad;
    TensorSet ts(tensor_sizes(), gen);
    DeviceBuffer<float> lr_dev(std::vector<float>{float(cfg.lr)});
    for (std::int64_t step = 1; step <= 3; ++step) {
      auto views = ts.views();
      kc::adamw_step(views.data(), std::int64_t(views.size()), cfg, step, step == 3 ? lr_dev.data() : nullptr,
                     nullptr);
      for (std::size_t i = 0; i < ts.p.size(); ++i)
        ak::cpu::adamw_step<float>(std::int64_t(ts.p[i].size()), ts.p[i].data(), ts.g[i].data(), ts.b0[i].data(),
                                   ts.b1[i].data(), ts.b2[i].data(), step, cfg);
      ts.expect_match(amsgrad ? "amsgrad" : "adamw");
      for (std::size_t i = 0; i < ts.p.size(); ++i)
        if (!ts.p[i].empty())
          EXPECT_TRUE(near_all(ts.db1[i].download(), ts.b1[i], 1e-5, 1e-9, "exp_avg_sq " + std::to_string(i)));
      ts.new_grads(gen);
    }
  }
}

// AGC over 57 tensors (two launches): conv-like [units, k] weights, depthwise-like rows of 9, vectors (one unit),
// a single long row and scalars. Each unit's gradient is drawn with a norm of 10x or 0.1x its bound
// λ·max(‖w‖, eps), so the float (device) and double (host) norms agree on which units clip; some units have
// weights below eps, so the eps floor decides their bound.
TEST(CudaOptim, AgcClipMatchesCpu) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  std::mt19937_64 gen(seed);
  const ak::AgcConfig cfg{0.02, 1e-3};
  std::vector<std::pair<std::int64_t, std::int64_t>> shapes{{64, 288}, {320, 9}, {1, 1280}, {1, 70000}, {1, 1},
                                                             {7, 1},   {0, 5},   {3, 33}};
  for (int i = 0; i < 49; ++i) shapes.push_back({std::int64_t(1 + i % 11), std::int64_t(1 + (13 * i) % 40)});
  std::vector<std::vector<float>> w, g, g_host;
  std::vector<DeviceBuffer<float>> dw, dg;
  std::vector<kc::AgcTensor> views;
  std::uniform_int_distribution<int> coin(0, 1);
  for (const auto& [units, len] : shapes) {
    const std::size_t n = std::size_t(units * len);
    std::vector<float> wv = normal(n, gen), gv = normal(n, gen);
    for (std::int64_t u = 0; u < units; ++u) {
      float* wu = wv.data() + u * len;
      float* gu = gv.data() + u * len;
      if (u % 5 == 4)
        for (std::int64_t i = 0; i < len; ++i) wu[i] *= 1e-6f;  // below eps
      double ww = 0.0, gg = 0.0;
      for (std::int64_t i = 0; i < len; ++i) {
        ww += double(wu[i]) * wu[i];
        gg += double(gu[i]) * gu[i];
      }
      const double bound = cfg.clip_factor * std::max(std::sqrt(ww), cfg.eps);
      const double target = bound * (coin(gen) ? 10.0 : 0.1);
      for (std::int64_t i = 0; i < len; ++i) gu[i] = float(gu[i] * target / std::sqrt(gg));
    }
    w.push_back(wv);
    g.push_back(gv);
    dw.push_back(n == 0 ? DeviceBuffer<float>(1) : DeviceBuffer<float>(wv));
    dg.push_back(n == 0 ? DeviceBuffer<float>(1) : DeviceBuffer<float>(gv));
    kc::AgcTensor t;
    t.param = dw.back().data();
    t.grad = dg.back().data();
    t.units = units;
    t.unit_size = len;
    views.push_back(t);
  }
  kc::agc_clip(views.data(), std::int64_t(views.size()), cfg, nullptr);
  std::size_t clipped = 0, kept = 0;
  for (std::size_t t = 0; t < shapes.size(); ++t) {
    const auto [units, len] = shapes[t];
    if (units == 0) continue;
    std::vector<float> want = g[t];
    ak::cpu::agc_clip<float>(units, len, w[t].data(), want.data(), cfg);
    const std::vector<float> got = dg[t].download();
    EXPECT_TRUE(near_all(got, want, 1e-5, 1e-12, "agc tensor " + std::to_string(t)));
    EXPECT_EQ(dw[t].download(), w[t]) << "agc changed parameter " << t;
    for (std::int64_t u = 0; u < units; ++u) {
      const bool same = std::equal(want.begin() + u * len, want.begin() + (u + 1) * len, g[t].begin() + u * len);
      if (same) {
        ++kept;  // an unclipped unit is left bit-for-bit untouched on the device too
        EXPECT_TRUE(std::equal(got.begin() + u * len, got.begin() + (u + 1) * len, g[t].begin() + u * len))
            << "tensor " << t << " unit " << u << " should be untouched";
      } else {
        ++clipped;
      }
    }
  }
  EXPECT_GT(clipped, 50u);
  EXPECT_GT(kept, 50u);
}

TEST(CudaOptim, AgcClipRejectsBadArguments) {
  ARCLIGHT_REQUIRE_GPU();
  DeviceBuffer<float> w(std::vector<float>{1.f, 2.f}), g(std::vector<float>{3.f, 4.f});
  kc::AgcTensor t;
  t.param = w.data();
  t.grad = g.data();
  t.units = 1;
  t.unit_size = 2;
  EXPECT_ERROR_WITH(kc::agc_clip(&t, 1, ak::AgcConfig{0.0, 1e-3}, nullptr), "cuda::agc_clip", "clip_factor > 0");
  EXPECT_ERROR_WITH(kc::agc_clip(&t, 1, ak::AgcConfig{0.01, -1.0}, nullptr), "cuda::agc_clip", "eps >= 0");
  t.unit_size = 0;
  EXPECT_ERROR_WITH(kc::agc_clip(&t, 1, ak::AgcConfig{}, nullptr), "cuda::agc_clip", "unit_size > 0");
  t.unit_size = 2;
  t.grad = nullptr;
  EXPECT_ERROR_WITH(kc::agc_clip(&t, 1, ak::AgcConfig{}, nullptr), "cuda::agc_clip", "non-null param and grad");
  EXPECT_EQ(g.download(), (std::vector<float>{3.f, 4.f}));
}

}  // namespace
