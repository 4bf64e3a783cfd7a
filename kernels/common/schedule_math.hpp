// The learning-rate schedules as a pure function lr(t, config), shared by the CPU side
// (kernels/cpu/schedule.hpp, which validates configs) and CUDA (so a captured step can evaluate the lr on
// the device). Cosine follows timm's CosineLRScheduler._get_lr exactly (timm 0.6–0.9):
//   t < warmup_t:  lr = warmup_lr_init + t·(base − warmup_lr_init)/warmup_t
//   else (t −= warmup_t if warmup_prefix):
//     cycle_mul ≠ 1: i = floor(log(1 − t/t_initial·(1 − cycle_mul)) / log(cycle_mul)),
//                    t_i = cycle_mul^i·t_initial, t_curr = t − (1 − cycle_mul^i)/(1 − cycle_mul)·t_initial
//     cycle_mul = 1: i = floor(t / t_initial), t_i = t_initial, t_curr = t − t_initial·i
//     i < cycle_limit: lr = lr_min + ½(base·cycle_decay^i − lr_min)(1 + cos(π·t_curr^k / t_i^k))
//     else            lr = lr_min
// Step follows timm's StepLRScheduler: base·decay_rate^floor(t / decay_t) after the same warm-up;
// Constant is base after the warm-up. t is whatever the caller counts (epochs or optimizer steps); it
// is a double so fractional epochs work. Computed in double on both devices.
#pragma once

#include <math.h>
#include <stdint.h>

#include "kernels/common/macros.hpp"

namespace arclight::kernels {

enum class ScheduleKind : int32_t { kConstant = 0, kCosine = 1, kStep = 2 };

// Defaults are timm's. Validated by kernels::cpu::validate_schedule (and the Schedule class).
struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::kCosine;
  double base_lr = 0.1;         // the optimizer's lr (timm's base_values)
  double warmup_t = 0.0;        // warm-up length (0 = none)
  double warmup_lr_init = 0.0;  // lr at t = 0 of the warm-up
  bool warmup_prefix = false;   // true: the cosine/step clock starts after the warm-up
  // cosine
  double t_initial = 1.0;  // first cycle length (> 0)
  double lr_min = 0.0;
  double cycle_mul = 1.0;    // each cycle is cycle_mul times longer than the previous
  double cycle_decay = 1.0;  // each cycle's peak is cycle_decay times the previous
  int32_t cycle_limit = 1;   // number of cycles; after them lr = lr_min
  double k_decay = 1.0;      // k-decay exponent (arXiv 2004.05909); 1 = plain cosine
  // step
  double decay_t = 1.0;     // period of the step decay (> 0)
  double decay_rate = 1.0;  // factor per period
};

// lr at time t. requires: a validated config, t >= 0.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE double schedule_lr(double t, const ScheduleConfig& c) {
  if (t < c.warmup_t) {
    // timm: warmup_steps = (base − warmup_lr_init) / warmup_t (only reached when warmup_t > 0).
    return c.warmup_lr_init + t * (c.base_lr - c.warmup_lr_init) / c.warmup_t;
  }
  if (c.warmup_prefix) t -= c.warmup_t;
  if (c.kind == ScheduleKind::kConstant) return c.base_lr;
  if (c.kind == ScheduleKind::kStep) return c.base_lr * ::pow(c.decay_rate, ::floor(t / c.decay_t));

  double i;
  double t_i;
  double t_curr;
  if (c.cycle_mul != 1.0) {
    // Python's math.log(x, base) is log(x)/log(base); same floor semantics at cycle boundaries.
    i = ::floor(::log(1.0 - t / c.t_initial * (1.0 - c.cycle_mul)) / ::log(c.cycle_mul));
    t_i = ::pow(c.cycle_mul, i) * c.t_initial;
    t_curr = t - (1.0 - ::pow(c.cycle_mul, i)) / (1.0 - c.cycle_mul) * c.t_initial;
  } else {
    i = ::floor(t / c.t_initial);
    t_i = c.t_initial;
    t_curr = t - c.t_initial * i;
  }
  if (i >= double(c.cycle_limit)) return c.lr_min;
  const double lr_max = c.base_lr * ::pow(c.cycle_decay, i);
  const double pi = 3.14159265358979323846;
  const double frac = c.k_decay == 1.0 ? t_curr / t_i : ::pow(t_curr, c.k_decay) / ::pow(t_i, c.k_decay);
  return c.lr_min + 0.5 * (lr_max - c.lr_min) * (1.0 + ::cos(pi * frac));
}

}  // namespace arclight::kernels
