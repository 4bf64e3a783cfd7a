// The CPU side of the learning-rate schedules: validation of a ScheduleConfig (the formula itself is the
// pure function kernels::schedule_lr in kernels/common/schedule_math.hpp, shared with CUDA) and a small
// value type, Schedule, that validates once and then evaluates lr(t). The optimizer layer
// (include/arclight/optim/) owns when t advances (per epoch or per step).
#pragma once

#include <cmath>

#include "arclight/core/error.hpp"
#include "kernels/common/schedule_math.hpp"

namespace arclight::kernels::cpu {

// validate_schedule: throws arclight::Error naming the offending field unless
//   base_lr, warmup_lr_init, lr_min >= 0; warmup_t >= 0; all finite;
//   cosine: t_initial > 0, warmup_t <= t_initial, cycle_mul > 0, cycle_decay > 0, cycle_limit >= 1, k_decay > 0;
//   step: decay_t > 0, decay_rate > 0.
inline void validate_schedule(const ScheduleConfig& c) {
  const char* op = "schedule";
  const int kind = int(c.kind);
  ARCLIGHT_CHECK(kind >= 0 && kind <= 2, op, "unknown schedule kind ", kind,
                 " (expected constant=0, cosine=1, step=2)");
  auto non_negative = [&](double v, const char* name) {
    ARCLIGHT_CHECK(std::isfinite(v) && v >= 0.0, op, "expected ", name, " >= 0 (finite), got ", name, "=", v);
  };
  auto positive = [&](double v, const char* name) {
    ARCLIGHT_CHECK(std::isfinite(v) && v > 0.0, op, "expected ", name, " > 0 (finite), got ", name, "=", v);
  };
  non_negative(c.base_lr, "base_lr");
  non_negative(c.warmup_t, "warmup_t");
  non_negative(c.warmup_lr_init, "warmup_lr_init");
  if (c.kind == ScheduleKind::kCosine) {
    positive(c.t_initial, "t_initial");
    non_negative(c.lr_min, "lr_min");
    ARCLIGHT_CHECK(c.warmup_t <= c.t_initial, op, "warmup_t=", c.warmup_t, " exceeds t_initial=", c.t_initial,
                   ": expected warmup_t <= t_initial");
    positive(c.cycle_mul, "cycle_mul");
    positive(c.cycle_decay, "cycle_decay");
    ARCLIGHT_CHECK(c.cycle_limit >= 1, op, "expected cycle_limit >= 1, got cycle_limit=", c.cycle_limit);
    positive(c.k_decay, "k_decay");
  } else if (c.kind == ScheduleKind::kStep) {
    positive(c.decay_t, "decay_t");
    positive(c.decay_rate, "decay_rate");
  }
}

// A validated schedule. lr(t) requires t >= 0 and finite (else arclight::Error).
class Schedule {
 public:
  explicit Schedule(const ScheduleConfig& config) : config_(config) { validate_schedule(config_); }

  double lr(double t) const {
    ARCLIGHT_CHECK(std::isfinite(t) && t >= 0.0, "schedule", "expected a time t >= 0 (finite), got t=", t);
    return schedule_lr(t, config_);
  }

  const ScheduleConfig& config() const { return config_; }

 private:
  ScheduleConfig config_;
};

}  // namespace arclight::kernels::cpu
