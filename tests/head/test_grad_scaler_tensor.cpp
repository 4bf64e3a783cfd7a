// Unit tests of cuda::GradScaler on Tensors and optimizers (include/arclight/cuda/grad_scaler.hpp: scale_loss and
// step), with CPU parameters, where loss scaling is exact up to float rounding and needs no GPU: a step from a scaled
// loss leaves the same parameters as the plain step (SGD with momentum, AdamW; f32 and f64; a power-of-two scale,
// where it is bit-exact, and an odd one); an inf or NaN gradient skips the step — parameters, optimizer buffers and
// step counts untouched — and halves the scale; the scale grows after growth_interval good steps; a disabled
// scaler is the plain step; parameters without a gradient are skipped; a strided gradient is unscaled correctly.
// The device path (amp_unscale under step) runs in tests/cuda/test_cuda_ops.cpp, on a GPU and under the emulator.
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "arclight/cuda/grad_scaler.hpp"
#include "arclight/optim/adamw.hpp"
#include "arclight/optim/sgd.hpp"
#include "harness.hpp"

namespace {

using arclight::DType;
using arclight::Tensor;
namespace optim = arclight::optim;
namespace ops = arclight::ops;
namespace ac = arclight::cuda;

// A leaf parameter of `shape` with values in [-1, 1) from `seed` (never all zero).
Tensor make_param(const arclight::Shape& shape, std::uint64_t seed, DType dt) {
  arclight::Generator g(seed);
  Tensor t = arclight::rand(shape, dt, g, -1.0, 1.0);
  t.set_requires_grad(true);
  return t;
}

Tensor clone_param(const Tensor& p) {
  Tensor t = ops::clone(p).detach();
  t.set_requires_grad(true);
  return t;
}

// A small regression loss over W [4, 3] and b [4]: mean((x·Wᵀ + b − target)²) for a fixed batch of 5.
Tensor regression_loss(const Tensor& w, const Tensor& b, int step) {
  arclight::Generator g(1000 + std::uint64_t(step));
  const Tensor x = arclight::rand({5, 3}, w.dtype(), g, -2.0, 2.0);
  const Tensor target = arclight::rand({5, 4}, w.dtype(), g, -1.0, 1.0);
  const Tensor r = ops::sub(ops::linear(x, w, b), target);
  return ops::mean(ops::mul(r, r));
}

std::unique_ptr<optim::Optimizer> make_optimizer(int which, const std::vector<Tensor>& params) {
  if (which == 0) {
    optim::SgdOptions o;
    o.lr = 0.05;
    o.momentum = 0.9;
    o.weight_decay = 1e-3;
    return std::make_unique<optim::SGD>(params, o);
  }
  optim::AdamWOptions o;
  o.lr = 0.01;
  return std::make_unique<optim::AdamW>(params, o);
}

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

// Largest |a − b| / (atol + rtol·|b|) over the elements (<= 1 means within tolerance).
double worst_ratio(const std::vector<double>& a, const std::vector<double>& b, double rtol, double atol) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / (atol + rtol * std::abs(b[i])));
  return worst;
}

struct ScaledCase {
  int optimizer;  // 0 SGD, 1 AdamW
  DType dtype;
  double scale;
  bool bit_exact;  // power-of-two scale: scaling and unscaling are exact, so the parameters must match exactly
};

TEST(GradScalerTensor, ScaledLossStepGivesTheSameParametersAsThePlainStep) {
  const std::vector<ScaledCase> cases = {{0, DType::f32, 1024.0, true},   {1, DType::f32, 65536.0, true},
                                         {0, DType::f64, 3000.0, false},  {1, DType::f32, 3000.0, false},
                                         {1, DType::f64, 1024.0, true}};
  for (const ScaledCase& c : cases) {
    SCOPED_TRACE(std::string(c.optimizer == 0 ? "SGD" : "AdamW") + " " + arclight::dtype_name(c.dtype) + " scale " +
                 std::to_string(c.scale));
    const Tensor w0 = make_param({4, 3}, 11, c.dtype), b0 = make_param({4}, 12, c.dtype);
    Tensor w = clone_param(w0), b = clone_param(b0), sw = clone_param(w0), sb = clone_param(b0);
    auto opt = make_optimizer(c.optimizer, {w, b});
    auto sopt = make_optimizer(c.optimizer, {sw, sb});
    ac::GradScalerConfig cfg;
    cfg.init_scale = c.scale;
    cfg.growth_interval = 1000;
    ac::GradScaler scaler(cfg);
    for (int step = 0; step < 4; ++step) {
      const Tensor loss = regression_loss(w, b, step);
      loss.backward();
      const Tensor sloss = regression_loss(sw, sb, step);
      const Tensor scaled = scaler.scale_loss(sloss);
      EXPECT_NEAR(scaled.item(), sloss.item() * c.scale, 1e-6 * std::abs(sloss.item() * c.scale));
      scaled.backward();
      // The backward saw the scaled loss: gradients are scale() times the plain ones before unscaling.
      EXPECT_LT(worst_ratio(values(sw.grad()), values(ops::mul(w.grad(), c.scale)), 1e-5, 1e-6 * c.scale), 1.0);
      opt->step();
      EXPECT_TRUE(scaler.step(*sopt));
      // After step() the gradients are unscaled in place.
      EXPECT_LT(worst_ratio(values(sw.grad()), values(w.grad()), 1e-5, 1e-6), 1.0);
      opt->zero_grad();
      sopt->zero_grad();
    }
    EXPECT_EQ(sopt->step_count(), 4);
    EXPECT_EQ(scaler.scale(), c.scale);
    EXPECT_EQ(scaler.skipped_steps(), 0);
    if (c.bit_exact) {
      EXPECT_EQ(values(sw), values(w));
      EXPECT_EQ(values(sb), values(b));
    } else {
      EXPECT_LT(worst_ratio(values(sw), values(w), 1e-5, 1e-6), 1.0);
      EXPECT_LT(worst_ratio(values(sb), values(b), 1e-5, 1e-6), 1.0);
    }
    EXPECT_NE(values(w), values(w0)) << "the parameters moved";
  }
}

// Snapshot of an optimizer's state tensors (copied) and step count.
struct OptSnapshot {
  std::int64_t steps;
  std::vector<std::pair<std::string, std::vector<double>>> tensors;
};
OptSnapshot snapshot(const optim::Optimizer& opt) {
  OptSnapshot s;
  const optim::OptimizerState st = opt.state_dict();
  s.steps = st.step;
  for (const auto& [name, t] : st.tensors) s.tensors.emplace_back(name, t.to_vector<double>());
  return s;
}

TEST(GradScalerTensor, InfOrNanGradientSkipsTheStepAndBacksOff) {
  for (const double bad : {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN()}) {
    for (int which = 0; which < 2; ++which) {
      SCOPED_TRACE(std::string(which == 0 ? "SGD" : "AdamW") + " with " + std::to_string(bad));
      Tensor w = make_param({4, 3}, 21, DType::f32), b = make_param({4}, 22, DType::f32);
      Tensor unused = make_param({2}, 23, DType::f32);  // never gets a gradient: skipped, not an error
      auto opt = make_optimizer(which, {w, b, unused});
      ac::GradScalerConfig cfg;
      cfg.init_scale = 4096.0;
      cfg.growth_interval = 2;
      ac::GradScaler scaler(cfg);
      // One good step first, so the optimizer has state (momentum / Adam moments) that a bad step must not touch.
      scaler.scale_loss(regression_loss(w, b, 0)).backward();
      ASSERT_TRUE(scaler.step(*opt));
      opt->zero_grad();
      EXPECT_EQ(scaler.growth_tracker(), 1);
      const auto w_before = values(w), b_before = values(b), unused_before = values(unused);
      const OptSnapshot before = snapshot(*opt);
      ASSERT_FALSE(before.tensors.empty());
      // The bad value sits in b's gradient (the second parameter); w's gradient is finite.
      scaler.scale_loss(regression_loss(w, b, 1)).backward();
      std::vector<double> gb = values(b.grad());
      gb[2] = bad;
      b.set_grad(arclight::from_vector(gb, b.shape(), DType::f32));
      EXPECT_FALSE(scaler.step(*opt));
      EXPECT_EQ(values(w), w_before) << "a skipped step must not move any parameter";
      EXPECT_EQ(values(b), b_before);
      EXPECT_EQ(values(unused), unused_before);
      const OptSnapshot after = snapshot(*opt);
      EXPECT_EQ(after.steps, before.steps);
      ASSERT_EQ(after.tensors.size(), before.tensors.size());
      for (std::size_t i = 0; i < after.tensors.size(); ++i) {
        EXPECT_EQ(after.tensors[i].first, before.tensors[i].first);
        EXPECT_EQ(after.tensors[i].second, before.tensors[i].second) << after.tensors[i].first;
      }
      EXPECT_EQ(scaler.scale(), 2048.0);
      EXPECT_EQ(scaler.growth_tracker(), 0);
      EXPECT_EQ(scaler.skipped_steps(), 1);
      // The next clean step runs again at the reduced scale, and the bad value did not leak into the state.
      opt->zero_grad();
      scaler.scale_loss(regression_loss(w, b, 2)).backward();
      EXPECT_TRUE(scaler.step(*opt));
      EXPECT_EQ(opt->step_count(), before.steps + 1);
      for (double v : values(w)) EXPECT_TRUE(std::isfinite(v));
      for (double v : values(b)) EXPECT_TRUE(std::isfinite(v));
    }
  }
}

TEST(GradScalerTensor, ScaleGrowsAfterGrowthIntervalGoodSteps) {
  Tensor w = make_param({4, 3}, 31, DType::f64), b = make_param({4}, 32, DType::f64);
  auto opt = make_optimizer(1, {w, b});
  ac::GradScalerConfig cfg;
  cfg.init_scale = 256.0;
  cfg.growth_interval = 3;
  cfg.growth_factor = 4.0;
  ac::GradScaler scaler(cfg);
  const std::vector<double> want = {256, 256, 1024, 1024, 1024, 4096, 4096};
  for (std::size_t step = 0; step < want.size(); ++step) {
    scaler.scale_loss(regression_loss(w, b, int(step))).backward();
    EXPECT_TRUE(scaler.step(*opt));
    EXPECT_EQ(scaler.scale(), want[step]) << "after step " << step;
    opt->zero_grad();
  }
  EXPECT_EQ(opt->step_count(), std::int64_t(want.size()));
  EXPECT_EQ(scaler.growth_tracker(), 1);
}

TEST(GradScalerTensor, DisabledScalerIsThePlainStep) {
  ac::GradScalerConfig cfg;
  cfg.enabled = false;
  ac::GradScaler scaler(cfg);
  const Tensor w0 = make_param({4, 3}, 41, DType::f32), b0 = make_param({4}, 42, DType::f32);
  Tensor w = clone_param(w0), b = clone_param(b0), dw = clone_param(w0), db = clone_param(b0);
  auto opt = make_optimizer(1, {w, b});
  auto dopt = make_optimizer(1, {dw, db});
  for (int step = 0; step < 3; ++step) {
    regression_loss(w, b, step).backward();
    opt->step();
    const Tensor loss = regression_loss(dw, db, step);
    const Tensor scaled = scaler.scale_loss(loss);
    EXPECT_TRUE(scaled.is_same(loss)) << "disabled: scale_loss is the identity";
    scaled.backward();
    EXPECT_TRUE(scaler.step(*dopt));
    opt->zero_grad();
    dopt->zero_grad();
  }
  EXPECT_EQ(values(dw), values(w));
  EXPECT_EQ(values(db), values(b));
  EXPECT_EQ(scaler.scale(), 1.0);
  // Disabled means no checking either: the optimizer steps even on a non-finite gradient (PyTorch's semantics).
  dw.set_grad(arclight::full({4, 3}, std::numeric_limits<double>::infinity(), DType::f32));
  EXPECT_TRUE(scaler.step(*dopt));
  EXPECT_EQ(dopt->step_count(), 4);
}

TEST(GradScalerTensor, StridedGradientIsUnscaledInPlaceOfItsParameter) {
  Tensor w = make_param({3, 4}, 51, DType::f32);
  optim::SgdOptions o;
  o.lr = 0.5;
  optim::SGD opt(std::vector<Tensor>{w}, o);
  ac::GradScalerConfig cfg;
  cfg.init_scale = 8.0;
  ac::GradScaler scaler(cfg);
  // A transposed (non-contiguous) gradient of 8·g, g_ij = 0.1·(i − 2j) + 0.05.
  std::vector<double> g(12), gt(12);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) {
      g[std::size_t(i * 4 + j)] = 0.1 * (i - 2 * j) + 0.05;
      gt[std::size_t(j * 3 + i)] = 8.0 * g[std::size_t(i * 4 + j)];
    }
  const Tensor strided = ops::transpose(arclight::from_vector(gt, {4, 3}, DType::f32), 0, 1);
  ASSERT_FALSE(strided.is_contiguous());
  w.set_grad(strided);
  const auto w_before = values(w);
  EXPECT_TRUE(scaler.step(opt));
  EXPECT_TRUE(w.grad().is_contiguous());
  const auto got = values(w.grad()), after = values(w);
  for (std::size_t i = 0; i < 12; ++i) {
    EXPECT_NEAR(got[i], g[i], 1e-6) << "gradient element " << i;
    EXPECT_NEAR(after[i], w_before[i] - 0.5 * g[i], 1e-6) << "parameter element " << i;
  }
}

TEST(GradScalerTensor, ScaleLossRejectsAnUndefinedTensor) {
  ac::GradScaler scaler;
  EXPECT_ERROR_WITH(scaler.scale_loss(Tensor()), "GradScaler::scale_loss", "undefined");
}

}  // namespace
