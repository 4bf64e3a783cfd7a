// Golden parity of the retrieval head with PyTorch 1.13: tests/golden/gen_head.py computed the references
// (float64, from float32 inputs) and committed them as tests/golden/data/head_*.safetensors, read here with
// io::SafetensorsFile. Every case runs in float64 (tight tolerances: only rounding differs) and in float32
// (rtol 1e-4 or tighter, with an absolute floor scaled to the tensor's largest value where a value is a
// small difference of large terms). Covered: GeM (y, dL/dx, dL/dp), ArcMargin's reference formula (ArcFace
// with the θ + m > π fallback, easy_margin; logits and gradients of x and W), F.cross_entropy with
// label smoothing and weights for every reduction and at ±1e4 logits, the whole head into the loss,
// SGD-Nesterov / AdamW / AdamW-amsgrad over 5 steps, and timm's CosineLRScheduler at 50 steps.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "arclight/io/safetensors.hpp"
#include "golden_util.hpp"
#include "arclight/optim/adamw.hpp"
#include "arclight/optim/schedule.hpp"
#include "arclight/optim/sgd.hpp"
#include "head_util.hpp"

namespace {

using arclight::DType;
using arclight::Tensor;
namespace ops = arclight::ops;
namespace optim = arclight::optim;
namespace io = arclight::io;

using Golden = arclight::testing::GoldenFile;
using arclight::testing::close;

struct Precision {
  DType dt;
  double rtol;      // value tolerance
  double atol_rel;  // absolute floor relative to the tensor's largest value
};
const Precision kPrecisions[] = {{DType::f64, 1e-10, 1e-12}, {DType::f32, 1e-4, 1e-5}};

TEST(HeadGolden, Gem) {
  Golden g("head_gem");
  for (const auto& pr : kPrecisions) {
    for (std::string c : {"a_", "b_"}) {
      Tensor x = g.leaf(c + "x", pr.dt), p = g.leaf(c + "p", pr.dt);
      Tensor y = ops::gem(x, p, 1e-6);
      EXPECT_TRUE(close(y, g.get(c + "y"), pr.rtol)) << c << " f" << (pr.dt == DType::f32 ? 32 : 64);
      y.backward(g.get(c + "gy", pr.dt));
      EXPECT_TRUE(close(x.grad(), g.get(c + "gx"), pr.rtol, pr.atol_rel)) << c;
      EXPECT_TRUE(close(p.grad(), g.get(c + "gp"), pr.rtol)) << c;
    }
  }
}

TEST(HeadGolden, ArcMarginReferenceFormula) {
  Golden g("head_arc_margin");
  // The fixture holds rows on the fallback side (cos_y ≈ −0.999 < th) and one at cos_y ≈ 0.9998.
  const auto cy = g.get("cos").to_vector<double>();
  const auto yv = g.get("labels").to_vector<std::int64_t>();
  EXPECT_LT(cy[0 * 10 + std::size_t(yv[0])], std::cos(M_PI - 0.5));
  EXPECT_GT(cy[2 * 10 + std::size_t(yv[2])], 0.999);
  for (const auto& pr : kPrecisions) {
    Tensor xd = g.get("x", pr.dt), wd = g.get("w", pr.dt);
    EXPECT_TRUE(close(ops::cosine_logits(xd, wd), g.get("cos"), pr.rtol, pr.atol_rel));
    for (std::string c : {"arc_", "easy_"}) {
      Tensor x = g.leaf("x", pr.dt), w = g.leaf("w", pr.dt);
      ops::ArcMarginConfig cfg;
      cfg.scale = 30.0;
      cfg.margin = 0.5;
      cfg.easy_margin = c == "easy_";
      Tensor logits = ops::arc_margin(ops::cosine_logits(x, w), g.get("labels"), cfg);
      EXPECT_TRUE(close(logits, g.get(c + "logits"), pr.rtol, pr.atol_rel)) << c;
      ops::sum(ops::mul(logits, g.get("r", pr.dt))).backward();
      // float32: the row at cos_y ≈ 0.9998 amplifies cosine rounding by c/sinθ ≈ 50 in dphi/dc, so the
      // absolute floor is 1e-4 of the largest gradient there; everything else holds 1e-4 relative.
      const double floor = pr.dt == DType::f32 ? 1e-4 : pr.atol_rel;
      EXPECT_TRUE(close(x.grad(), g.get(c + "gx"), pr.rtol, floor)) << c;
      EXPECT_TRUE(close(w.grad(), g.get(c + "gw"), pr.rtol, floor)) << c;
    }
  }
}

TEST(HeadGolden, LabelSmoothingCrossEntropy) {
  Golden g("head_ce");
  const double up = 0.7;
  struct V {
    const char* name;
    double eps;
    bool weighted;
  };
  for (const auto& pr : kPrecisions) {
    for (const V& v : {V{"ls_w", 0.1, true}, V{"plain", 0.0, false}, V{"ls", 0.25, false}}) {
      for (auto r : {ops::Reduction::kNone, ops::Reduction::kMean, ops::Reduction::kSum}) {
        for (std::string big : {"", "big_"}) {
          const std::string rn = r == ops::Reduction::kNone ? "none" : r == ops::Reduction::kMean ? "mean" : "sum";
          const std::string key = big + v.name + "_" + rn;
          Tensor z = g.leaf(big.empty() ? "z" : "zbig", pr.dt);
          Tensor y = g.get(big.empty() ? "labels" : "ybig");
          Tensor w = v.weighted ? ops::contiguous(ops::narrow(g.get("weight", pr.dt), 0, 0, z.shape()[1])) : Tensor();
          Tensor loss = ops::cross_entropy(z, y, {v.eps, r}, w);
          EXPECT_TRUE(close(loss, g.get(key + "_loss"), pr.rtol, pr.atol_rel)) << key;
          loss.backward(r == ops::Reduction::kNone ? g.get(big.empty() ? "up_none" : "up_none_big", pr.dt)
                                                   : arclight::full({}, up, pr.dt));
          EXPECT_TRUE(close(z.grad(), g.get(key + "_grad"), pr.rtol, pr.atol_rel)) << key;
        }
      }
    }
  }
}

TEST(HeadGolden, WholeHeadFusedAndComposed) {
  Golden g("head_arc_ce");
  ops::ArcMarginConfig cfg;
  cfg.scale = 45.0;
  cfg.margin = 0.4;
  const ops::CrossEntropyConfig ce{0.1, ops::Reduction::kMean};
  for (const auto& pr : kPrecisions) {
    for (bool fused : {true, false}) {
      Tensor x = g.leaf("x", pr.dt), w = g.leaf("w", pr.dt);
      Tensor y = g.get("labels"), cw = g.get("weight", pr.dt);
      Tensor cos = ops::cosine_logits(x, w);
      Tensor loss = fused ? ops::arc_margin_cross_entropy(cos, y, cfg, ce, cw)
                          : ops::cross_entropy(ops::arc_margin(cos, y, cfg), y, ce, cw);
      EXPECT_TRUE(close(loss, g.get("loss"), pr.rtol)) << "fused " << fused;
      loss.backward();
      const double floor = pr.dt == DType::f32 ? 1e-4 : pr.atol_rel;  // cos_y ≈ 1 row, as above
      EXPECT_TRUE(close(x.grad(), g.get("gx"), pr.rtol, floor)) << "fused " << fused;
      EXPECT_TRUE(close(w.grad(), g.get("gw"), pr.rtol, floor)) << "fused " << fused;
    }
  }
}

TEST(HeadGolden, OptimizersOverFiveSteps) {
  Golden g("head_optim");
  for (const auto& pr : kPrecisions) {
    for (std::string name : {"sgd", "adamw", "amsgrad"}) {
      Tensor p0 = g.leaf("p0", pr.dt), p1 = g.leaf("p1", pr.dt);
      std::unique_ptr<optim::Optimizer> opt;
      if (name == "sgd") {
        opt = std::make_unique<optim::SGD>(
            std::vector<optim::ParamGroup>{{{p0}, 1.0, 1e-2, true, "p0"}, {{p1}, 1.0, 0.0, true, "p1"}}, optim::SgdOptions{0.1, 0.9, 0.0, 0.0, true});
      } else {
        const bool ams = name == "amsgrad";
        opt = std::make_unique<optim::AdamW>(std::vector<optim::ParamGroup>{{{p0}, 1.0, 0.05, true, "p0"}, {{p1}, 1.0, 0.0, true, "p1"}},
                                             optim::AdamWOptions{0.01, 0.9, ams ? 0.99 : 0.999, 1e-8, 0.0, ams});
      }
      Tensor g0 = g.get("g0", pr.dt), g1 = g.get("g1", pr.dt);
      Tensor ref0 = g.get(name + "_p0"), ref1 = g.get(name + "_p1");
      for (std::int64_t t = 0; t < 5; ++t) {
        p0.set_grad(ops::contiguous(ops::select(g0, 0, t)));
        p1.set_grad(ops::contiguous(ops::select(g1, 0, t)));
        opt->step();
        // float32: parameters carry rounding of ~1e-7 per step; 1e-5 of the largest value bounds 5 steps.
        EXPECT_TRUE(close(p0, ops::select(ref0, 0, t), pr.rtol, pr.atol_rel)) << name << " step " << t;
        EXPECT_TRUE(close(p1, ops::select(ref1, 0, t), pr.rtol, pr.atol_rel)) << name << " step " << t;
      }
    }
  }
}

TEST(HeadGolden, TimmCosineScheduleFiftySteps) {
  Golden g("head_schedule");
  for (std::string c : {"a", "b", "c"}) {
    const auto v = g.get(c + "_config").to_vector<double>();
    // order: base, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t, warmup_lr_init,
    //        warmup_prefix, k_decay
    optim::ScheduleConfig cfg;
    cfg.kind = optim::ScheduleKind::kCosine;
    cfg.base_lr = v[0];
    cfg.t_initial = v[1];
    cfg.lr_min = v[2];
    cfg.cycle_mul = v[3];
    cfg.cycle_decay = v[4];
    cfg.cycle_limit = std::int32_t(v[5]);
    cfg.warmup_t = v[6];
    cfg.warmup_lr_init = v[7];
    cfg.warmup_prefix = v[8] != 0.0;
    cfg.k_decay = v[9];
    Tensor p = arclight::zeros({1});
    p.set_requires_grad(true);
    optim::SGD opt({p}, {0.1});
    optim::Scheduler sched(opt, cfg, optim::ScheduleUnit::kStep);
    const auto ref = g.get(c + "_lr").to_vector<double>();
    ASSERT_EQ(ref.size(), 50u);
    for (std::int64_t t = 0; t < 50; ++t) {
      sched.step_update(t);
      EXPECT_NEAR(opt.lr(), ref[std::size_t(t)], 1e-12 * std::abs(ref[std::size_t(t)]) + 1e-18) << c << " t=" << t;
    }
  }
}

}  // namespace
