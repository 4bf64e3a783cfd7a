// nn::GeM: generalised-mean pooling [N, C, H, W] → [N, C] with a learnable exponent (METHOD.md §2): the
// pooling between the backbone's feature map and the embedding neck. Parameter "p" (shape [1], init 3,
// as the reference's GeM and timm's GeneralizedMeanPooling) is registered with no_weight_decay.
//
// Keeping p >= 1: an optimizer step may push p below 1 (p → 0 turns GeM into a geometric mean, p < 0
// into a soft-min, neither of which the method wants). The mechanism is explicit and cheap: clamp_p_()
// projects p back onto [p_min, ∞) in place after each update. Register it once with the optimizer —
//   opt.add_post_step_hook([&] { nn::clamp_gem_p_(model); });
// — and every step() ends with the projection (projected SGD). forward() itself never clamps, so the
// gradient w.r.t. p is the true one, and it checks that p is still >= p_min, failing loudly when a
// training loop forgot the hook rather than silently pooling with another exponent.
#pragma once

#include <algorithm>
#include <memory>

#include "arclight/nn/init.hpp"
#include "arclight/nn/module.hpp"
#include "arclight/ops/gem.hpp"

namespace arclight::nn {

class GeM : public Module {
 public:
  // requires: p_init >= p_min >= 1e-3 (finite), eps > 0.
  explicit GeM(double p_init = 3.0, double eps = kernels::kGemDefaultEps, double p_min = 1.0,
               DType dtype = DType::f32)
      : Module("GeM"), eps_(eps), p_min_(p_min) {
    ARCLIGHT_CHECK(std::isfinite(p_min) && p_min >= 1e-3, "nn::GeM", "expected p_min >= 1e-3, got p_min=", p_min);
    ARCLIGHT_CHECK(std::isfinite(p_init) && p_init >= p_min, "nn::GeM", "expected p_init >= p_min=", p_min,
                   ", got p_init=", p_init);
    ARCLIGHT_CHECK(std::isfinite(eps) && eps > 0.0, "nn::GeM", "expected eps > 0, got eps=", eps);
    p_ = full({1}, p_init, dtype);
    register_parameter("p", p_, /*no_weight_decay=*/true);
  }

  // requires: x [N, C, H, W] of p's dtype; p >= p_min (see clamp_p_). ensures: [N, C], differentiable in x and p.
  // On a GPU the p >= p_min check is skipped (reading p back would stall the device every step); clamp_p_ there
  // clamps on the device.
  Tensor forward(const Tensor& x) override {
    if (p_.device().is_cpu()) {
      const double p = p_.item();
      ARCLIGHT_CHECK(p >= p_min_ * (1.0 - 1e-6), "nn::GeM", "p=", p, " fell below p_min=", p_min_,
                     ": call GeM::clamp_p_() (or nn::clamp_gem_p_(model)) after each optimizer step");
    }
    return ops::gem(x, p_, eps_);
  }

  // In place, without recording: p = max(p, p_min).
  void clamp_p_() {
    NoGradGuard ng;
    if (p_.device().is_cuda()) {
      Tensor p = p_;
      ops::copy_(p, ops::clamp_min(p_, p_min_));
      return;
    }
    fill_(p_, std::max(p_.item(), p_min_));
  }

  double p() const { return p_.item(); }
  double p_min() const { return p_min_; }
  double eps() const { return eps_; }
  const Tensor& p_tensor() const { return p_; }

 private:
  double eps_, p_min_;
  Tensor p_;
};

// Applies GeM::clamp_p_() to `m` and every GeM below it; returns how many were clamped-checked.
inline int clamp_gem_p_(Module& m) {
  int count = 0;
  if (auto* g = dynamic_cast<GeM*>(&m)) {
    g->clamp_p_();
    ++count;
  }
  for (auto& [name, child] : m.children()) count += clamp_gem_p_(*child);
  return count;
}

}  // namespace arclight::nn
