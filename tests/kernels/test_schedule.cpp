// Unit tests of the learning-rate schedules (kernels/common/schedule_math.hpp, kernels/cpu/schedule.hpp):
// timm CosineLRScheduler semantics (warm-up with and without prefix, cycles with cycle_mul / cycle_decay /
// cycle_limit, k-decay), step and constant schedules, and validation errors. Expected values come from
// the closed forms at points where they are simple (half-periods, cycle starts), not from the code.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "head_test_util.hpp"
#include "kernels/cpu/schedule.hpp"

namespace {

using namespace arclight;
using namespace arclight::test;
using kernels::ScheduleConfig;
using kernels::ScheduleKind;
using kernels::cpu::Schedule;

ScheduleConfig cosine(double base, double t_initial, double lr_min) {
  ScheduleConfig c;
  c.kind = ScheduleKind::kCosine;
  c.base_lr = base;
  c.t_initial = t_initial;
  c.lr_min = lr_min;
  return c;
}

TEST(Schedule, ConstantWithLinearWarmup) {
  ScheduleConfig c;
  c.kind = ScheduleKind::kConstant;
  c.base_lr = 0.1;
  c.warmup_t = 5;
  c.warmup_lr_init = 0.001;
  const Schedule s(c);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.001);
  EXPECT_NEAR(s.lr(2.5), (0.001 + 0.1) / 2, 1e-15);
  EXPECT_NEAR(s.lr(4), 0.001 + 4 * 0.099 / 5, 1e-15);
  EXPECT_DOUBLE_EQ(s.lr(5), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(1000), 0.1);
}

TEST(Schedule, CosineSingleCycle) {
  const Schedule s(cosine(0.1, 10, 1e-4));
  EXPECT_DOUBLE_EQ(s.lr(0), 0.1);
  EXPECT_NEAR(s.lr(5), (0.1 + 1e-4) / 2, 1e-15);
  EXPECT_NEAR(s.lr(2.5), 1e-4 + (0.1 - 1e-4) * (2 + std::sqrt(2.0)) / 4, 1e-15);  // (1 + cos(π/4))/2
  // timm: the cycle counter reaches cycle_limit (1) at t = t_initial, from then on lr_min.
  EXPECT_DOUBLE_EQ(s.lr(10), 1e-4);
  EXPECT_DOUBLE_EQ(s.lr(37), 1e-4);
  for (int t = 1; t < 10; ++t) EXPECT_LT(s.lr(t), s.lr(t - 1)) << t;
}

TEST(Schedule, WarmupWithoutAndWithPrefix) {
  ScheduleConfig c = cosine(0.2, 10, 0.0);
  c.warmup_t = 2;
  c.warmup_lr_init = 0.02;
  const Schedule plain(c);
  EXPECT_DOUBLE_EQ(plain.lr(0), 0.02);
  EXPECT_NEAR(plain.lr(1), 0.11, 1e-15);
  // Without prefix the cosine clock counts from 0, so at t = warmup_t it is already past its start.
  EXPECT_NEAR(plain.lr(2), 0.1 * (1 + std::cos(std::numbers::pi * 0.2)), 1e-15);
  EXPECT_NEAR(plain.lr(5), 0.1, 1e-15);
  c.warmup_prefix = true;
  const Schedule prefixed(c);
  EXPECT_DOUBLE_EQ(prefixed.lr(1), plain.lr(1));
  EXPECT_DOUBLE_EQ(prefixed.lr(2), 0.2);
  EXPECT_NEAR(prefixed.lr(7), 0.1, 1e-15);
  EXPECT_DOUBLE_EQ(prefixed.lr(12), 0.0);
}

TEST(Schedule, CyclesWithMulDecayAndLimit) {
  // Cycles of 4, 8, 16 (cycle_mul 2) starting at t = 0, 4, 12; peaks 1, 0.5, 0.25 (cycle_decay 0.5).
  ScheduleConfig c = cosine(1.0, 4, 0.01);
  c.cycle_mul = 2;
  c.cycle_decay = 0.5;
  c.cycle_limit = 3;
  const Schedule s(c);
  EXPECT_DOUBLE_EQ(s.lr(0), 1.0);
  EXPECT_NEAR(s.lr(2), (1.0 + 0.01) / 2, 1e-15);
  EXPECT_NEAR(s.lr(4), 0.5, 1e-15);
  EXPECT_NEAR(s.lr(8), (0.5 + 0.01) / 2, 1e-15);
  EXPECT_NEAR(s.lr(12), 0.25, 1e-15);
  EXPECT_NEAR(s.lr(20), (0.25 + 0.01) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(s.lr(28), 0.01);  // the fourth cycle is past cycle_limit
  EXPECT_DOUBLE_EQ(s.lr(100), 0.01);
  // Equal-length restarts (cycle_mul 1).
  ScheduleConfig e = cosine(1.0, 10, 0.0);
  e.cycle_limit = 2;
  e.cycle_decay = 0.5;
  const Schedule r(e);
  EXPECT_NEAR(r.lr(10), 0.5, 1e-15);
  EXPECT_NEAR(r.lr(15), 0.25, 1e-15);
  EXPECT_DOUBLE_EQ(r.lr(20), 0.0);
}

TEST(Schedule, KDecay) {
  ScheduleConfig c = cosine(1.0, 10, 0.0);
  c.k_decay = 2.0;
  const Schedule s(c);
  // cos(π·t^k / T^k): at t = T/√2 the argument is π/2.
  EXPECT_NEAR(s.lr(10 / std::sqrt(2.0)), 0.5, 1e-12);
  EXPECT_GT(s.lr(5), Schedule(cosine(1.0, 10, 0.0)).lr(5));  // k > 1 keeps the lr high for longer
}

TEST(Schedule, PerStepFiftySteps) {
  // Per-step use: t counts optimizer steps. 5 warm-up steps from 0, then cosine over 50 steps.
  ScheduleConfig c = cosine(2e-3, 50, 1e-6);
  c.warmup_t = 5;
  const Schedule s(c);
  for (int t = 0; t < 50; ++t) {
    const double expect =
        t < 5 ? t * 2e-3 / 5 : 1e-6 + 0.5 * (2e-3 - 1e-6) * (1 + std::cos(std::numbers::pi * t / 50.0));
    EXPECT_NEAR(s.lr(t), expect, 1e-18) << t;
  }
  EXPECT_DOUBLE_EQ(s.lr(50), 1e-6);
}

TEST(Schedule, StepDecay) {
  ScheduleConfig c;
  c.kind = ScheduleKind::kStep;
  c.base_lr = 0.1;
  c.decay_t = 3;
  c.decay_rate = 0.5;
  const Schedule s(c);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(2.9), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(3), 0.05);
  EXPECT_DOUBLE_EQ(s.lr(7), 0.025);
  c.warmup_t = 2;
  c.warmup_prefix = true;
  const Schedule w(c);
  EXPECT_DOUBLE_EQ(w.lr(1), 0.05);  // halfway up the warm-up from 0
  EXPECT_DOUBLE_EQ(w.lr(4.5), 0.1);
  EXPECT_DOUBLE_EQ(w.lr(5), 0.05);
}

TEST(Schedule, DeviceFunctionEqualsValidatedWrapper) {
  ScheduleConfig c = cosine(0.3, 20, 0.001);
  c.warmup_t = 4;
  c.warmup_lr_init = 0.01;
  const Schedule s(c);
  for (double t = 0; t < 30; t += 0.75) EXPECT_EQ(s.lr(t), kernels::schedule_lr(t, c)) << t;
}

TEST(Schedule, ValidationErrors) {
  ScheduleConfig c = cosine(0.1, 10, 0.0);
  c.warmup_t = 11;
  expect_error([&] { Schedule s(c); }, {"schedule", "warmup_t=11 exceeds t_initial=10"});
  c = cosine(0.1, 0, 0.0);
  expect_error([&] { Schedule s(c); }, {"schedule", "t_initial > 0"});
  c = cosine(0.1, 10, -1e-3);
  expect_error([&] { Schedule s(c); }, {"lr_min >= 0", "-0.001"});
  c = cosine(-0.1, 10, 0.0);
  expect_error([&] { Schedule s(c); }, {"base_lr >= 0"});
  c = cosine(0.1, 10, 0.0);
  c.warmup_t = -1;
  expect_error([&] { Schedule s(c); }, {"warmup_t >= 0"});
  c = cosine(0.1, 10, 0.0);
  c.cycle_limit = 0;
  expect_error([&] { Schedule s(c); }, {"cycle_limit >= 1"});
  c = cosine(0.1, 10, 0.0);
  c.cycle_mul = 0;
  expect_error([&] { Schedule s(c); }, {"cycle_mul > 0"});
  c = cosine(0.1, 10, 0.0);
  c.k_decay = std::nan("");
  expect_error([&] { Schedule s(c); }, {"k_decay"});
  ScheduleConfig st;
  st.kind = ScheduleKind::kStep;
  st.decay_t = 0;
  expect_error([&] { Schedule s(st); }, {"decay_t > 0"});
  const Schedule ok(cosine(0.1, 10, 0.0));
  expect_error([&] { ok.lr(-1); }, {"schedule", "t >= 0", "t=-1"});
  ScheduleConfig bad;
  bad.kind = ScheduleKind(9);
  expect_error([&] { Schedule s(bad); }, {"unknown schedule kind 9"});
}

}  // namespace
