// optim::Scheduler: drives an optimizer's learning rate from a schedule (METHOD.md §7): warm-up then
// cosine annealing with timm's CosineLRScheduler semantics (cycles, cycle_mul, cycle_decay, k-decay,
// warmup_prefix), or step decay, or constant, evaluated by the pure function kernels::schedule_lr
// (kernels/common/schedule_math.hpp, shared with the CUDA path) after kernels::cpu::validate_schedule.
//
// Time unit, as timm's t_in_epochs: a per-epoch schedule changes the lr in step_epoch(epoch) (call at the
// start of each epoch, or with epoch + 1 at its end as timm's loop does) and ignores step_update(); a
// per-step schedule changes it in step_update(num_updates) (call after each optimizer step with the
// number of updates done) and ignores step_epoch(). t_initial and warmup_t are counted in that unit.
// The schedule owns the lr: config.base_lr is the peak, the optimizer's lr is overwritten with lr(0) at
// construction (timm sets warmup_lr_init then).
#pragma once

#include <cmath>

#include "arclight/optim/optimizer.hpp"
#include "kernels/cpu/schedule.hpp"

namespace arclight::optim {

using ScheduleConfig = kernels::ScheduleConfig;
using ScheduleKind = kernels::ScheduleKind;

enum class ScheduleUnit { kEpoch, kStep };

class Scheduler {
 public:
  // requires: a valid config (kernels::cpu::validate_schedule: e.g. warmup_t <= t_initial, t_initial > 0,
  //   non-negative lrs; else arclight::Error naming the field). ensures: optimizer.lr() == lr_at(0).
  Scheduler(Optimizer& optimizer, const ScheduleConfig& config, ScheduleUnit unit = ScheduleUnit::kEpoch)
      : optimizer_(&optimizer), schedule_(config), unit_(unit) {
    apply(0.0);
  }

  // The lr at time t (in the schedule's unit). requires: t >= 0, finite.
  double lr_at(double t) const { return schedule_.lr(t); }

  // Per-epoch schedules: sets the optimizer's lr to lr_at(epoch). No-op for per-step schedules.
  void step_epoch(double epoch) {
    if (unit_ == ScheduleUnit::kEpoch) apply(epoch);
  }
  // Per-step schedules: sets the optimizer's lr to lr_at(num_updates). No-op for per-epoch schedules.
  void step_update(std::int64_t num_updates) {
    if (unit_ == ScheduleUnit::kStep) apply(double(num_updates));
  }

  double current_lr() const { return optimizer_->lr(); }
  ScheduleUnit unit() const { return unit_; }
  const ScheduleConfig& config() const { return schedule_.config(); }

 private:
  void apply(double t) { optimizer_->set_lr(schedule_.lr(t)); }

  Optimizer* optimizer_;
  kernels::cpu::Schedule schedule_;
  ScheduleUnit unit_;
};

// The method's schedule: linear warm-up from warmup_lr_init over warmup_t, then one cosine from base_lr down
// to lr_min ending at t_initial (timm's CosineLRScheduler(t_initial, lr_min, warmup_t, warmup_lr_init)).
inline ScheduleConfig cosine_schedule(double base_lr, double t_initial, double warmup_t = 0.0,
                                      double warmup_lr_init = 0.0, double lr_min = 0.0) {
  ScheduleConfig c;
  c.kind = ScheduleKind::kCosine;
  c.base_lr = base_lr;
  c.t_initial = t_initial;
  c.warmup_t = warmup_t;
  c.warmup_lr_init = warmup_lr_init;
  c.lr_min = lr_min;
  return c;
}

}  // namespace arclight::optim
