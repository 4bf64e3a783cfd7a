// The optimizers on device parameters (label `cuda`; skips without a GPU): optim::AdamW / optim::SGD step all of a
// step's device parameters in multi-tensor launches grouped by (lr, weight decay, update count / first step), and AGC
// clips all device gradients of its groups in one multi-tensor launch. Checked against the same optimizers on CPU
// twins of the parameters: more tensors than one launch takes, several groups with their own lr scale and weight
// decay, an AGC-exempt group, parameters that miss a gradient on some steps (so update counts diverge and the
// launches split), a non-contiguous gradient, and gradients whose units are clearly above or below the AGC bound.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "arclight/arclight.hpp"
#include "arclight/optim/adamw.hpp"
#include "arclight/optim/sgd.hpp"
#include "cuda/cuda_test_util.hpp"
#include "harness.hpp"

namespace {

using namespace arclight;
using arclight::testing::cuda::fresh_seed;

const Device kGpu = Device::cuda(0);

// A parameter set of 60 tensors (conv-, depthwise-, linear-like weights, vectors, scalars) on the CPU and its twin
// on the GPU (same values), split into three groups.
struct TwinParams {
  std::vector<Tensor> cpu, gpu;
  std::vector<optim::ParamGroup> cpu_groups, gpu_groups;

  explicit TwinParams(std::uint64_t seed) {
    std::vector<Shape> shapes{{32, 16, 3, 3}, {48, 1, 3, 3}, {40, 96}, {96}, {}, {1, 1}, {7, 5, 1, 1}};
    for (int i = 0; shapes.size() < 60; ++i) shapes.push_back(i % 3 == 0 ? Shape{1 + i % 7} : Shape{1 + i % 9, 2 + i % 5});
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      Generator g(seed + i);
      Tensor c = rand(shapes[i], DType::f32, g, -1.0, 1.0).detach();
      Tensor d = c.to(kGpu).detach();
      c.set_requires_grad(true);
      d.set_requires_grad(true);
      cpu.push_back(c);
      gpu.push_back(d);
    }
    cpu_groups = groups(cpu);
    gpu_groups = groups(gpu);
  }

  // "decay": tensors 0..39 (wd from the optimizer); "no_decay": 40..54 (wd 0, lr x 0.5); "head": 55..59 (AGC off).
  static std::vector<optim::ParamGroup> groups(const std::vector<Tensor>& p) {
    optim::ParamGroup decay, no_decay, head;
    decay.name = "decay";
    no_decay.name = "no_decay";
    no_decay.weight_decay = 0.0;
    no_decay.lr_scale = 0.5;
    head.name = "head";
    head.agc = false;
    head.lr_scale = 2.0;
    for (std::size_t i = 0; i < p.size(); ++i) (i < 40 ? decay : i < 55 ? no_decay : head).params.push_back(p[i]);
    return {decay, no_decay, head};
  }

  // Fresh gradients for step `step`: per AGC unit either large (norm far above λ·‖w‖) or tiny (far below), the
  // same values on both devices; tensor 3 gets a non-contiguous gradient; every 7th tensor has none on odd steps.
  void set_grads(std::uint64_t seed, int step) {
    std::mt19937_64 gen(seed * 31 + std::uint64_t(step));
    std::uniform_int_distribution<int> coin(0, 1);
    for (std::size_t i = 0; i < cpu.size(); ++i) {
      if (i % 7 == 6 && step % 2 == 1) {
        cpu[i].zero_grad();
        gpu[i].zero_grad();
        continue;
      }
      Generator g(seed * 1000 + i * 10 + std::uint64_t(step));
      Tensor gr = rand(cpu[i].shape(), DType::f32, g, -1.0, 1.0);
      const std::int64_t units = cpu[i].dim() >= 2 ? cpu[i].shape()[0] : 1;
      std::vector<float> v = gr.to_vector<float>();
      const std::size_t len = v.size() / std::size_t(units);
      for (std::int64_t u = 0; u < units; ++u) {
        const float f = coin(gen) ? 10.f : 1e-5f;  // ‖g‖ ≈ 10·sqrt(len/3) or 1e-5·sqrt(len/3) vs λ·‖w‖ ≈ 0.01·sqrt(len/3)
        for (std::size_t k = 0; k < len; ++k) v[std::size_t(u) * len + k] *= f;
      }
      Tensor cg = from_vector(v, cpu[i].shape());
      Tensor dg = cg.to(kGpu);
      if (i == 3) {  // a strided view: the optimizers take a contiguous copy
        Tensor wide = zeros({cpu[i].numel(), 2}, DType::f32, kGpu);
        Tensor column = ops::select(wide, 1, 0);
        ops::copy_(column, dg);
        dg = ops::select(wide, 1, 0);
        ASSERT_FALSE(dg.is_contiguous());
      }
      cpu[i].set_grad(cg);
      gpu[i].set_grad(dg);
    }
  }

  void expect_match(const char* what) const {
    for (std::size_t i = 0; i < cpu.size(); ++i) {
      ASSERT_TRUE(gpu[i].device().is_cuda());
      EXPECT_TRUE(arclight::testing::all_close(gpu[i].to(Device::cpu()), cpu[i], 1e-5, 1e-6))
          << what << ": parameter " << i << " " << cpu[i].str();
    }
  }
};

void expect_states_match(const optim::Optimizer& gpu, const optim::Optimizer& cpu) {
  const optim::OptimizerState gs = gpu.state_dict(), cs = cpu.state_dict();
  ASSERT_EQ(gs.tensors.size(), cs.tensors.size());
  for (std::size_t i = 0; i < cs.tensors.size(); ++i) {
    EXPECT_EQ(gs.tensors[i].first, cs.tensors[i].first);
    EXPECT_TRUE(arclight::testing::all_close(gs.tensors[i].second.to(Device::cpu()), cs.tensors[i].second, 1e-5, 1e-6))
        << cs.tensors[i].first;
  }
}

TEST(CudaOptimOps, GroupedMultiTensorStepsWithAgcMatchTheCpu) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  for (int which = 0; which < 3; ++which) {
    const char* what = which == 0 ? "AdamW" : which == 1 ? "AdamW amsgrad" : "SGD nesterov";
    SCOPED_TRACE(what);
    TwinParams tw(seed + std::uint64_t(which) * 7919);
    std::unique_ptr<optim::Optimizer> opt, gopt;
    if (which < 2) {
      optim::AdamWOptions o;
      o.lr = 1e-2;
      o.weight_decay = 0.05;
      o.amsgrad = which == 1;
      opt = std::make_unique<optim::AdamW>(tw.cpu_groups, o);
      gopt = std::make_unique<optim::AdamW>(tw.gpu_groups, o);
    } else {
      optim::SgdOptions o;
      o.lr = 1e-2;
      o.momentum = 0.9;
      o.nesterov = true;
      o.weight_decay = 1e-3;
      opt = std::make_unique<optim::SGD>(tw.cpu_groups, o);
      gopt = std::make_unique<optim::SGD>(tw.gpu_groups, o);
    }
    opt->set_agc(optim::AgcConfig{0.01, 1e-3});
    gopt->set_agc(optim::AgcConfig{0.01, 1e-3});
    for (int step = 0; step < 4; ++step) {
      tw.set_grads(seed + std::uint64_t(which), step);
      if (step == 2) {  // the schedule changes the lr between steps
        opt->set_lr(3e-3);
        gopt->set_lr(3e-3);
      }
      opt->step();
      gopt->step();
      tw.expect_match((std::string(what) + " step " + std::to_string(step)).c_str());
    }
    expect_states_match(*gopt, *opt);
    EXPECT_EQ(gopt->step_count(), 4);
  }
}

// AGC by itself: the device clips exactly the units the host clips, and leaves the others bit-for-bit untouched.
TEST(CudaOptimOps, AgcOnDeviceGradientsMatchesTheCpu) {
  ARCLIGHT_REQUIRE_GPU();
  const std::uint64_t seed = fresh_seed();
  ARCLIGHT_TRACE_SEED(seed);
  TwinParams tw(seed);
  tw.set_grads(seed, 0);
  std::vector<Tensor> before;
  for (const Tensor& p : tw.gpu) before.push_back(p.grad().defined() ? p.grad().to(Device::cpu()) : Tensor());
  optim::adaptive_clip_grad_(tw.cpu, optim::AgcConfig{0.01, 1e-3});
  optim::adaptive_clip_grad_(tw.gpu, optim::AgcConfig{0.01, 1e-3});
  std::size_t changed = 0;
  for (std::size_t i = 0; i < tw.cpu.size(); ++i) {
    const Tensor gg = tw.gpu[i].grad().to(Device::cpu()), cg = tw.cpu[i].grad();
    EXPECT_TRUE(gg.is_contiguous() || i != 3);
    EXPECT_TRUE(arclight::testing::all_close(gg, cg, 1e-5, 1e-12)) << "gradient " << i;
    const auto b = before[i].to_vector<float>(), c = cg.to_vector<float>(), g = gg.to_vector<float>();
    for (std::size_t k = 0; k < b.size(); ++k) {
      if (b[k] == c[k])
        EXPECT_EQ(g[k], b[k]) << "an unclipped element changed: gradient " << i << " element " << k;
      else
        ++changed;
    }
  }
  EXPECT_GT(changed, 100u);
  // a float64 or mixed-device request is refused with the op's name
  Tensor p64 = zeros({3, 2}, DType::f64).to(kGpu).detach();
  p64.set_requires_grad(true);
  p64.set_grad(ones({3, 2}, DType::f64).to(kGpu));
  EXPECT_ERROR_WITH(optim::adaptive_clip_grad_(p64), "optim::agc", "float32 device parameter");
}

}  // namespace
