// Unit tests of the optimizer steps and AGC on flat arrays (kernels/cpu/optim.hpp): SGD (plain, momentum,
// dampening, Nesterov, weight decay) and AdamW (decoupled decay, bias correction, amsgrad) against
// step-by-step transcriptions of PyTorch's update rules and closed forms; AGC per unit; bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "head_test_util.hpp"
#include "kernels/cpu/optim.hpp"

namespace {

using namespace arclight;
using namespace arclight::test;
using kernels::AdamWConfig;
using kernels::AgcConfig;
using kernels::SgdConfig;
namespace cpu = arclight::kernels::cpu;

TEST(Sgd, NesterovClosedFormForConstantGradient) {
  // Constant gradient g, no decay: buf1 = g, buf2 = 1.9g; Nesterov steps lr(g + 0.9·buf).
  SgdConfig c;
  c.lr = 0.1;
  c.momentum = 0.9;
  c.nesterov = true;
  std::vector<double> p{1.0, -2.0}, g{0.5, -0.25}, buf = garbage<double>(2);
  cpu::sgd_step(2, p.data(), g.data(), buf.data(), true, c);
  cpu::sgd_step(2, p.data(), g.data(), buf.data(), false, c);
  for (size_t i = 0; i < 2; ++i) {
    const double p0 = i == 0 ? 1.0 : -2.0;
    EXPECT_NEAR(buf[i], 1.9 * g[i], 1e-15);
    EXPECT_NEAR(p[i], p0 - 0.1 * (g[i] + 0.9 * g[i]) - 0.1 * (g[i] + 0.9 * 1.9 * g[i]), 1e-15);
  }
}

// PyTorch's SGD written out, one element at a time, for five steps with varying gradients.
TEST(Sgd, MatchesPyTorchRuleOverFiveSteps) {
  const size_t n = 37;
  for (int variant = 0; variant < 4; ++variant) {
    SgdConfig c;
    c.lr = 0.05;
    c.momentum = variant == 0 ? 0.0 : 0.9;
    c.dampening = variant == 2 ? 0.3 : 0.0;
    c.nesterov = variant == 3;
    c.weight_decay = variant == 1 ? 0.0 : 1e-2;
    auto p = random_vector(n, -1.0, 1.0, 801);
    auto ref = p;
    std::vector<double> buf(n, 1e30), ref_buf(n, 0.0);
    std::vector<float> pf(p.begin(), p.end()), buff(n, 1e30f);
    for (int step = 0; step < 5; ++step) {
      const auto g = random_vector(n, -1.0, 1.0, 810 + uint64_t(step));
      for (size_t i = 0; i < n; ++i) {
        double d = g[i] + c.weight_decay * ref[i];
        if (c.momentum != 0.0) {
          ref_buf[i] = step == 0 ? d : c.momentum * ref_buf[i] + (1 - c.dampening) * d;
          d = c.nesterov ? d + c.momentum * ref_buf[i] : ref_buf[i];
        }
        ref[i] -= c.lr * d;
      }
      cpu::sgd_step(int64_t(n), p.data(), g.data(), c.momentum != 0.0 ? buf.data() : nullptr, step == 0, c);
      const auto gf = cast_vector<float>(g);
      cpu::sgd_step(int64_t(n), pf.data(), gf.data(), c.momentum != 0.0 ? buff.data() : nullptr, step == 0, c);
    }
    expect_all_close(p, ref, 1e-14, 1e-15, "sgd variant " + std::to_string(variant));
    expect_all_close(pf, ref, 1e-6, 1e-6, "sgd f32 variant " + std::to_string(variant));
  }
}

TEST(AdamW, ClosedFormForConstantGradient) {
  // With a constant g the bias-corrected moments are g and g², so each step moves lr·g/(|g| + eps') with
  // eps' = eps (the denominator is sqrt(v)/sqrt(bc2) + eps = |g| + eps), after decaying p by (1 − lr·wd).
  AdamWConfig c;
  c.lr = 1e-2;
  c.weight_decay = 0.1;
  c.eps = 1e-8;
  std::vector<double> p{0.7, -0.3, 2.0}, g{0.2, -1.5, 3e-3};
  std::vector<double> m(3, 0.0), v(3, 0.0);
  auto expect = p;
  for (int64_t step = 1; step <= 5; ++step) {
    cpu::adamw_step<double>(3, p.data(), g.data(), m.data(), v.data(), nullptr, step, c);
    for (size_t i = 0; i < 3; ++i)
      expect[i] = expect[i] * (1 - c.lr * c.weight_decay) - c.lr * g[i] / (std::abs(g[i]) + c.eps);
  }
  expect_all_close(p, expect, 1e-12, 1e-15, "adamw closed form");
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(m[i], (1 - std::pow(0.9, 5)) * g[i], 1e-15);
    EXPECT_NEAR(v[i], (1 - std::pow(0.999, 5)) * g[i] * g[i], 1e-15);
  }
}

TEST(AdamW, MatchesPyTorchRuleWithAmsgrad) {
  const size_t n = 29;
  for (bool ams : {false, true}) {
    AdamWConfig c;
    c.lr = 3e-3;
    c.beta1 = 0.8;
    c.beta2 = 0.95;
    c.eps = 1e-6;
    c.weight_decay = 0.05;
    c.amsgrad = ams;
    auto p = random_vector(n, -1.0, 1.0, 820);
    auto ref = p;
    std::vector<double> m(n, 0), v(n, 0), vmax(n, 0), rm(n, 0), rv(n, 0), rvmax(n, 0);
    std::vector<float> pf(p.begin(), p.end()), mf(n, 0), vf(n, 0), vmaxf(n, 0);
    for (int64_t step = 1; step <= 5; ++step) {
      // Gradients shrink over the steps, so amsgrad's running max differs from v.
      auto g = random_vector(n, -1.0, 1.0, 830 + uint64_t(step));
      for (auto& x : g) x /= double(step * step);
      const double bc1 = 1 - std::pow(c.beta1, double(step)), bc2 = 1 - std::pow(c.beta2, double(step));
      for (size_t i = 0; i < n; ++i) {
        ref[i] *= 1 - c.lr * c.weight_decay;
        rm[i] = c.beta1 * rm[i] + (1 - c.beta1) * g[i];
        rv[i] = c.beta2 * rv[i] + (1 - c.beta2) * g[i] * g[i];
        rvmax[i] = std::max(rvmax[i], rv[i]);
        const double second = ams ? rvmax[i] : rv[i];
        ref[i] -= c.lr / bc1 * rm[i] / (std::sqrt(second) / std::sqrt(bc2) + c.eps);
      }
      cpu::adamw_step(int64_t(n), p.data(), g.data(), m.data(), v.data(), vmax.data(), step, c);
      const auto gf = cast_vector<float>(g);
      cpu::adamw_step(int64_t(n), pf.data(), gf.data(), mf.data(), vf.data(), vmaxf.data(), step, c);
    }
    expect_all_close(p, ref, 1e-13, 1e-15, std::string("adamw amsgrad=") + (ams ? "1" : "0"));
    expect_all_close(pf, ref, 1e-6, 1e-6, std::string("adamw f32 amsgrad=") + (ams ? "1" : "0"));
    if (ams) expect_all_close(vmax, rvmax, 1e-15, 0.0, "amsgrad max");
  }
}

TEST(Agc, ClipsOnlyUnitsOverTheBound) {
  // Three units of 4: unit 0 small gradient (kept), unit 1 large (clipped to λ‖W‖), unit 2 zero weights
  // (bound uses eps = 1e-3).
  const AgcConfig c;  // λ 0.01, eps 1e-3
  std::vector<double> w{1, 2, 2, 0, /**/ 3, 0, 4, 0, /**/ 0, 0, 0, 0};
  std::vector<double> g{0.001, 0.002, 0.0, 0.0, /**/ 1.0, -2.0, 2.0, 0.0, /**/ 0.5, 0.5, 0.5, 0.5};
  const auto g0 = g;
  cpu::agc_clip(3, 4, w.data(), g.data(), c);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(g[i], g0[i]);  // ‖G‖ ≈ 0.0022 < 0.01·3
  double n1 = 0, n2 = 0;
  for (size_t i = 4; i < 8; ++i) n1 += g[i] * g[i];
  for (size_t i = 8; i < 12; ++i) n2 += g[i] * g[i];
  EXPECT_NEAR(std::sqrt(n1), 0.01 * 5.0, 1e-15);
  EXPECT_NEAR(std::sqrt(n2), 0.01 * 1e-3, 1e-18);
  EXPECT_NEAR(g[5] / g[4], -2.0, 1e-15);  // direction kept
  // Whole-tensor unit (vectors / scalars as timm treats them), float.
  std::vector<float> wf{3, 4}, gf{6, 8};
  cpu::agc_clip(1, 2, wf.data(), gf.data(), c);
  EXPECT_NEAR(std::hypot(gf[0], gf[1]), 0.05, 1e-8);
}

TEST(OptimErrors, BadArguments) {
  std::vector<double> p(4, 1.0), g(4, 0.1), b(4, 0.0), v(4, 0.0);
  SgdConfig s;
  s.nesterov = true;
  expect_error([&] { cpu::sgd_step(4, p.data(), g.data(), b.data(), true, s); },
               {"sgd_step", "Nesterov", "momentum > 0"});
  s = SgdConfig{};
  s.lr = -1;
  expect_error([&] { cpu::sgd_step(4, p.data(), g.data(), b.data(), true, s); }, {"sgd_step", "lr >= 0", "lr=-1"});
  s = SgdConfig{};
  s.momentum = 0.9;
  expect_error([&] { cpu::sgd_step<double>(4, p.data(), g.data(), nullptr, true, s); }, {"momentum buffer"});
  s.weight_decay = -1e-4;
  expect_error([&] { cpu::sgd_step(4, p.data(), g.data(), b.data(), true, s); }, {"weight_decay >= 0"});
  AdamWConfig a;
  a.beta2 = 1.0;
  expect_error([&] { cpu::adamw_step<double>(4, p.data(), g.data(), b.data(), v.data(), nullptr, 1, a); },
               {"adamw_step", "beta2 in [0, 1)"});
  a = AdamWConfig{};
  expect_error([&] { cpu::adamw_step<double>(4, p.data(), g.data(), b.data(), v.data(), nullptr, 0, a); },
               {"step >= 1", "step=0"});
  a.amsgrad = true;
  expect_error([&] { cpu::adamw_step<double>(4, p.data(), g.data(), b.data(), v.data(), nullptr, 1, a); },
               {"amsgrad requires"});
  AgcConfig c;
  c.clip_factor = 0;
  expect_error([&] { cpu::agc_clip(2, 2, p.data(), g.data(), c); }, {"agc_clip", "clip_factor > 0"});
  expect_error([&] { cpu::agc_clip(2, int64_t(0), p.data(), g.data(), AgcConfig{}); }, {"agc_clip", "unit_size > 0"});
}

}  // namespace
