// Unit tests of the optimizer layer: SGD (plain, momentum + dampening, Nesterov with weight decay) and
// AdamW (incl. amsgrad) over several steps against PyTorch's update formulas written out by hand; parameter
// groups (lr scale, per-group weight decay, the default decay / no-decay / head split); AGC (clips exactly
// to λ·max(‖W_i‖, eps) per unit, leaves small gradients and exempt groups alone); parameters without
// gradients; state_dict round trips; post-step hooks (GeM clamp); the Scheduler; and bad arguments.
#include <cmath>
#include <vector>

#include "arclight/optim/adamw.hpp"
#include "arclight/optim/schedule.hpp"
#include "arclight/optim/sgd.hpp"
#include "head_util.hpp"

namespace {

using arclight::DType;
using arclight::Tensor;
using namespace arclight::head_test;
namespace optim = arclight::optim;
namespace nn = arclight::nn;
namespace ops = arclight::ops;
using arclight::testing::all_close;

Tensor param(const std::vector<double>& v, const arclight::Shape& s, DType dt = DType::f64) {
  return leaf_from(v, s, dt);
}

// Gradient of step t for a parameter of n values: deterministic, not all equal, sign-changing.
std::vector<double> grad_at(int t, std::size_t n, double scale = 1.0) {
  std::vector<double> g(n);
  for (std::size_t i = 0; i < n; ++i) g[i] = scale * std::sin(0.7 * double(i + 1) + 1.3 * t) * (1.0 + 0.1 * double(i));
  return g;
}

void set_grad(Tensor& p, const std::vector<double>& g) { p.set_grad(arclight::from_vector(g, p.shape(), p.dtype())); }

// PyTorch SGD on plain doubles.
struct RefSgd {
  double lr, mom, damp, wd;
  bool nesterov;
  std::vector<double> buf;
  void step(std::vector<double>& p, const std::vector<double>& g) {
    const bool first = buf.empty();
    if (first) buf.resize(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) {
      double d = g[i] + wd * p[i];
      if (mom != 0) {
        buf[i] = first ? d : mom * buf[i] + (1 - damp) * d;
        d = nesterov ? d + mom * buf[i] : buf[i];
      }
      p[i] -= lr * d;
    }
  }
};

// PyTorch AdamW on plain doubles.
struct RefAdamW {
  double lr, b1, b2, eps, wd;
  bool amsgrad;
  std::vector<double> m, v, vmax;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& g) {
    if (m.empty()) m.assign(p.size(), 0), v.assign(p.size(), 0), vmax.assign(p.size(), 0);
    ++t;
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      vmax[i] = std::max(vmax[i], v[i]);
      const double second = amsgrad ? vmax[i] : v[i];
      p[i] -= lr / bc1 * m[i] / (std::sqrt(second) / std::sqrt(bc2) + eps);
    }
  }
};

TEST(SGD, MatchesPyTorchFormulaOverSteps) {
  std::vector<optim::SgdOptions> cases = {
      {0.1, 0.0, 0.0, 0.0, false}, {0.05, 0.9, 0.1, 0.0, false}, {0.002 * 50, 0.9, 0.0, 1e-2, true}};
  for (const auto& o : cases) {
    std::vector<double> ref = {0.5, -1.25, 2.0, 0.75, -0.3, 1.1};
    Tensor p = param(ref, {2, 3});
    optim::SGD opt({p}, o);
    RefSgd r{o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov, {}};
    for (int t = 0; t < 5; ++t) {
      const auto g = grad_at(t, 6);
      set_grad(p, g);
      opt.step();
      r.step(ref, g);
      EXPECT_TRUE(all_close(p, ref, 1e-14, 1e-15)) << "step " << t << " momentum " << o.momentum;
    }
    EXPECT_EQ(opt.step_count(), 5);
    EXPECT_TRUE(p.is_leaf());
    EXPECT_TRUE(p.requires_grad());
  }
}

TEST(AdamW, MatchesPyTorchFormulaOverSteps) {
  for (bool ams : {false, true}) {
    for (DType dt : {DType::f64, DType::f32}) {
      std::vector<double> ref = {0.5, -1.25, 2.0, 0.75};
      Tensor p = param(ref, {4}, dt);
      optim::AdamWOptions o{0.01, 0.9, 0.99, 1e-8, 0.05, ams};
      optim::AdamW opt({p}, o);
      RefAdamW r{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, ams, {}, {}, {}};
      for (int t = 0; t < 6; ++t) {
        // Shrinking gradients make v fall, so amsgrad's max differs from v.
        const auto g = grad_at(t, 4, std::pow(0.3, t));
        set_grad(p, g);
        opt.step();
        r.step(ref, g);
        EXPECT_TRUE(all_close(p, ref, dt == DType::f32 ? 1e-6 : 1e-13, 1e-7)) << "step " << t << " amsgrad " << ams;
      }
    }
  }
}

TEST(Optimizer, GroupsScaleLrAndWeightDecay) {
  Tensor a = param({1.0, 2.0}, {2}), b = param({1.0, 2.0}, {2});
  optim::ParamGroup ga{{a}, 1.0, std::nullopt, true, "a"};  // default wd 0.5
  optim::ParamGroup gb{{b}, 0.1, 0.0, true, "b"};
  optim::SGD opt({ga, gb}, {1.0, 0.0, 0.0, 0.5, false});
  EXPECT_DOUBLE_EQ(opt.group_weight_decay(0), 0.5);
  EXPECT_DOUBLE_EQ(opt.group_weight_decay(1), 0.0);
  set_grad(a, {0.1, 0.1});
  set_grad(b, {0.1, 0.1});
  opt.set_lr(0.5);
  opt.step();
  // a: p −= 0.5·(g + 0.5·p);  b: p −= 0.05·g.
  EXPECT_TRUE(all_close(a, {1.0 - 0.5 * (0.1 + 0.5), 2.0 - 0.5 * (0.1 + 1.0)}, 1e-15, 0));
  EXPECT_TRUE(all_close(b, {1.0 - 0.005, 2.0 - 0.005}, 1e-15, 0));
}

TEST(Optimizer, DefaultParamGroupsSplitDecayAndHead) {
  auto net = std::make_shared<nn::Sequential>();
  net->push_back(std::make_shared<nn::GeM>());
  net->push_back(std::make_shared<nn::Linear>(8, 4));
  auto root = std::make_shared<nn::Sequential>();
  root->push_back(net);
  root->push_back(std::make_shared<nn::ArcMargin>(4, 3));
  const auto groups = optim::param_groups(*root, 1e-4, {"1."});
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0].name, "decay");
  ASSERT_EQ(groups[0].params.size(), 1u);
  EXPECT_TRUE(groups[0].params[0].is_same(std::dynamic_pointer_cast<nn::Linear>((*net)[1])->weight()));
  EXPECT_EQ(*groups[0].weight_decay, 1e-4);
  EXPECT_EQ(groups[1].name, "no_decay");
  EXPECT_EQ(groups[1].params.size(), 2u);  // GeM p, Linear bias
  EXPECT_EQ(*groups[1].weight_decay, 0.0);
  EXPECT_EQ(groups[2].name, "head_decay");  // ArcMargin weight: decays, not clipped
  EXPECT_FALSE(groups[2].agc);
  EXPECT_TRUE(groups[0].agc);
  EXPECT_EQ(optim::param_groups(*root, 0.1).size(), 2u);
  EXPECT_ERROR_WITH(optim::param_groups(*root, -1.0), "param_groups", "weight_decay >= 0");
}

TEST(Agc, ClipsUnitsToTheirBound) {
  // Row 0: ‖W‖ = 5, ‖G‖ = 1 > 0.01·5 → scaled to norm 0.05. Row 1: ‖G‖ tiny → untouched.
  // Row 2: ‖W‖ = 0 → bound uses eps = 1e-3: 1e-5.
  Tensor w = param({3, 4, 0.5, 0, 0, 0}, {3, 2});
  w.set_grad(arclight::from_vector(std::vector<double>{0.6, 0.8, 1e-4, -1e-4, 2.0, 0.0}, {3, 2}, DType::f64));
  optim::adaptive_clip_grad_(w, {0.01, 1e-3});
  const auto g = w.grad().to_vector<double>();
  EXPECT_NEAR(std::hypot(g[0], g[1]), 0.05, 1e-15);
  EXPECT_NEAR(g[0] / g[1], 0.75, 1e-12);  // direction kept
  EXPECT_EQ(g[2], 1e-4);
  EXPECT_EQ(g[3], -1e-4);
  EXPECT_NEAR(g[4], 1e-5, 1e-18);
  // 1-D parameters clip as one unit.
  Tensor b = param({0.3, 0.4}, {2});
  set_grad(b, {3.0, 4.0});
  optim::adaptive_clip_grad_(b, {0.01, 1e-3});
  EXPECT_TRUE(all_close(b.grad(), {0.003, 0.004}, 1e-12, 0));
  EXPECT_ERROR_WITH(optim::adaptive_clip_grad_(b, {0.0, 1e-3}), "optim::agc", "clip_factor > 0");
}

TEST(Agc, OptimizerAppliesItPerGroup) {
  Tensor body = param({1.0, 0.0}, {1, 2}), head = param({1.0, 0.0}, {1, 2});
  optim::SGD opt({optim::ParamGroup{{body}, 1.0, 0.0, true, "body"}, optim::ParamGroup{{head}, 1.0, 0.0, false, "head"}},
                 {1.0});
  opt.set_agc(optim::AgcConfig{0.01, 1e-3});
  set_grad(body, {0.0, 1.0});
  set_grad(head, {0.0, 1.0});
  opt.step();
  EXPECT_TRUE(all_close(body, {1.0, -0.01}, 1e-14, 0));  // clipped to 0.01·‖W‖
  EXPECT_TRUE(all_close(head, {1.0, -1.0}, 1e-14, 0));   // exempt
  EXPECT_ERROR_WITH(opt.set_agc(optim::AgcConfig{-1.0, 1e-3}), "optim::agc", "clip_factor > 0");
}

TEST(Optimizer, SkipsParametersWithoutGradientAndZeroGrad) {
  Tensor a = param({1.0}, {1}), b = param({2.0}, {1});
  optim::AdamW opt({a, b}, {0.1, 0.9, 0.999, 1e-8, 0.0, false});
  set_grad(a, {1.0});
  opt.step();
  EXPECT_DOUBLE_EQ(b.item(), 2.0);
  EXPECT_NEAR(a.item(), 1.0 - 0.1, 1e-7);  // first Adam step moves by lr·sign(g)
  const auto st = opt.state_dict();
  EXPECT_NE(st.find("state.0.exp_avg"), nullptr);
  EXPECT_EQ(st.find("state.1.exp_avg"), nullptr);
  EXPECT_EQ(st.find("state.0.step")->item(), 1.0);
  opt.zero_grad();
  EXPECT_FALSE(a.grad().defined());
}

TEST(Optimizer, StateDictRoundTripContinuesIdentically) {
  for (int kind = 0; kind < 2; ++kind) {
    const std::vector<double> init = {0.5, -1.0, 0.25, 2.0};
    Tensor p1 = param(init, {2, 2}), p2 = param(init, {2, 2});
    auto make = [&](Tensor& p) -> std::unique_ptr<optim::Optimizer> {
      if (kind == 0) return std::make_unique<optim::SGD>(std::vector<Tensor>{p}, optim::SgdOptions{0.1, 0.9, 0.0, 1e-3, true});
      return std::make_unique<optim::AdamW>(std::vector<Tensor>{p}, optim::AdamWOptions{0.05, 0.9, 0.99, 1e-8, 0.01, true});
    };
    auto o1 = make(p1);
    for (int t = 0; t < 3; ++t) {
      set_grad(p1, grad_at(t, 4));
      o1->step();
    }
    // A fresh optimizer over a copy of the parameters, loaded from the state, continues identically.
    {
      arclight::NoGradGuard ng;
      arclight::ops::copy_(p2, p1);
    }
    auto o2 = make(p2);
    o2->load_state_dict(o1->state_dict());
    EXPECT_EQ(o2->step_count(), 3);
    for (int t = 3; t < 5; ++t) {
      set_grad(p1, grad_at(t, 4));
      set_grad(p2, grad_at(t, 4));
      o1->step();
      o2->step();
    }
    EXPECT_TRUE(all_close(p2, p1, 0, 0)) << "kind " << kind;
    optim::OptimizerState bad = o1->state_dict();
    bad.tensors.emplace_back("state.0.velocity", arclight::zeros({2, 2}, DType::f64));
    EXPECT_ERROR_WITH(o2->load_state_dict(bad), "load_state_dict", "unknown buffer 'velocity'");
    optim::OptimizerState wrong = o1->state_dict();
    wrong.tensors[0].second = arclight::zeros({4}, DType::f64);
    EXPECT_ERROR_WITH(o2->load_state_dict(wrong), "load_state_dict", "[4]", "[2, 2]");
    optim::OptimizerState far = o1->state_dict();
    far.tensors.emplace_back("state.7.step", arclight::full({}, 1.0, DType::i64));
    EXPECT_ERROR_WITH(o2->load_state_dict(far), "load_state_dict", "parameter 7");
  }
}

TEST(Optimizer, PostStepHookClampsGeM) {
  auto gem = std::make_shared<nn::GeM>(1.2);
  optim::SGD opt(optim::param_groups(*gem, 0.0), {1.0});
  opt.add_post_step_hook([&] { nn::clamp_gem_p_(*gem); });
  Tensor p = gem->p_tensor();
  set_grad(p, {5.0});  // pushes p to 1.2 − 5 < 1
  opt.step();
  EXPECT_DOUBLE_EQ(gem->p(), 1.0);
}

TEST(Optimizer, BadArguments) {
  Tensor p = param({1.0}, {1});
  EXPECT_ERROR_WITH(optim::SGD({p, p}, {0.1}), "optim::SGD", "more than once");
  EXPECT_ERROR_WITH(optim::SGD({p}, {0.1, 0.9, 0.5, 0.0, true}), "sgd_step", "Nesterov", "dampening = 0");
  EXPECT_ERROR_WITH(optim::SGD({p}, {-0.1}), "optim::SGD", "lr >= 0");
  EXPECT_ERROR_WITH(optim::AdamW({p}, {0.1, 1.0}), "adamw_step", "beta1 in [0, 1)");
  Tensor nonleaf = ops::mul(p, 2.0);
  EXPECT_ERROR_WITH(optim::SGD({nonleaf}, {0.1}), "optim::SGD", "leaf");
  Tensor nograd = arclight::ones({2});
  EXPECT_ERROR_WITH(optim::SGD({nograd}, {0.1}), "optim::SGD", "requires grad");
  optim::SGD ok({p}, {0.1});
  EXPECT_ERROR_WITH(ok.set_lr(-1), "optim::SGD", "lr >= 0");
  p.set_grad(arclight::ones({2}, DType::f64));
  EXPECT_ERROR_WITH(ok.step(), "optim::SGD", "does not match parameter");
}

// ---- schedule --------------------------------------------------------------------------------------

TEST(Scheduler, WarmupCosinePerEpochAndPerStep) {
  Tensor p = param({1.0}, {1});
  optim::SGD opt({p}, {0.1});
  optim::Scheduler sched(opt, optim::cosine_schedule(0.002, 20, 4, 1e-5, 1e-6));
  EXPECT_DOUBLE_EQ(opt.lr(), 1e-5);  // t = 0: warmup_lr_init
  sched.step_epoch(2);
  EXPECT_NEAR(opt.lr(), 1e-5 + 2 * (0.002 - 1e-5) / 4, 1e-15);
  sched.step_epoch(10);
  EXPECT_NEAR(opt.lr(), 1e-6 + 0.5 * (0.002 - 1e-6) * (1 + std::cos(M_PI * 10 / 20)), 1e-15);
  sched.step_update(3);  // per-epoch: ignored
  EXPECT_NEAR(opt.lr(), sched.lr_at(10), 0);
  sched.step_epoch(20);
  EXPECT_NEAR(opt.lr(), 1e-6, 1e-15);  // past the single cycle: lr_min
  optim::Scheduler per_step(opt, optim::cosine_schedule(0.01, 100, 10), optim::ScheduleUnit::kStep);
  per_step.step_epoch(50);  // per-step: ignored
  EXPECT_DOUBLE_EQ(opt.lr(), 0.0);
  per_step.step_update(10);
  EXPECT_NEAR(opt.lr(), 0.005 * (1 + std::cos(M_PI * 0.1)), 1e-15);
  optim::ScheduleConfig step;
  step.kind = optim::ScheduleKind::kStep;
  step.base_lr = 0.1;
  step.decay_t = 3;
  step.decay_rate = 0.5;
  optim::Scheduler st(opt, step);
  st.step_epoch(7);
  EXPECT_NEAR(opt.lr(), 0.025, 1e-15);
}

TEST(Scheduler, BadConfigs) {
  Tensor p = param({1.0}, {1});
  optim::SGD opt({p}, {0.1});
  EXPECT_ERROR_WITH(optim::Scheduler(opt, optim::cosine_schedule(0.1, 5, 10)), "schedule", "warmup_t=10",
                    "exceeds t_initial=5");
  EXPECT_ERROR_WITH(optim::Scheduler(opt, optim::cosine_schedule(0.1, 0)), "schedule", "t_initial > 0");
  EXPECT_ERROR_WITH(optim::Scheduler(opt, optim::cosine_schedule(-0.1, 5)), "schedule", "base_lr >= 0");
  optim::Scheduler ok(opt, optim::cosine_schedule(0.1, 5));
  EXPECT_ERROR_WITH(ok.step_epoch(-1), "schedule", "t >= 0");
}

}  // namespace
