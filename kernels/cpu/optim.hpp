// CPU optimizer steps on flat arrays (one parameter tensor at a time, in place) and Adaptive Gradient
// Clipping, with PyTorch's SGD / AdamW and timm's adaptive_clip_grad semantics (the per-element math is
// kernels/common/optim_math.hpp, shared with the CUDA fused steps). The optimizer classes in
// include/arclight/optim/ own the state buffers, the step counts and the parameter groups and call these.
#pragma once

#include <cmath>
#include <cstdint>

#include "arclight/core/error.hpp"
#include "kernels/common/optim_math.hpp"

namespace arclight::kernels::cpu {

// Validates an SgdConfig (PyTorch's rules). Throws arclight::Error.
inline void validate_sgd(const SgdConfig& c) {
  const char* op = "sgd_step";
  ARCLIGHT_CHECK(std::isfinite(c.lr) && c.lr >= 0.0, op, "expected lr >= 0, got lr=", c.lr);
  ARCLIGHT_CHECK(std::isfinite(c.momentum) && c.momentum >= 0.0, op,
                 "expected momentum >= 0, got momentum=", c.momentum);
  ARCLIGHT_CHECK(std::isfinite(c.dampening), op, "expected a finite dampening, got dampening=", c.dampening);
  ARCLIGHT_CHECK(std::isfinite(c.weight_decay) && c.weight_decay >= 0.0, op,
                 "expected weight_decay >= 0, got weight_decay=", c.weight_decay);
  ARCLIGHT_CHECK(!c.nesterov || (c.momentum > 0.0 && c.dampening == 0.0), op,
                 "Nesterov momentum requires momentum > 0 and dampening = 0, got momentum=", c.momentum,
                 " dampening=", c.dampening);
}

// Validates an AdamWConfig (PyTorch's rules). Throws arclight::Error.
inline void validate_adamw(const AdamWConfig& c) {
  const char* op = "adamw_step";
  ARCLIGHT_CHECK(std::isfinite(c.lr) && c.lr >= 0.0, op, "expected lr >= 0, got lr=", c.lr);
  ARCLIGHT_CHECK(std::isfinite(c.eps) && c.eps >= 0.0, op, "expected eps >= 0, got eps=", c.eps);
  ARCLIGHT_CHECK(c.beta1 >= 0.0 && c.beta1 < 1.0, op, "expected beta1 in [0, 1), got beta1=", c.beta1);
  ARCLIGHT_CHECK(c.beta2 >= 0.0 && c.beta2 < 1.0, op, "expected beta2 in [0, 1), got beta2=", c.beta2);
  ARCLIGHT_CHECK(std::isfinite(c.weight_decay) && c.weight_decay >= 0.0, op,
                 "expected weight_decay >= 0, got weight_decay=", c.weight_decay);
}

// sgd_step: one SGD update of `count` parameters, in place on param and momentum_buf.
// requires: param, grad of count values; momentum_buf of count values when momentum > 0 (may be null
//   otherwise); first_step = true on the first update of this tensor (the buffer is initialised to the
//   decayed gradient, as PyTorch does when its buffer is None). grad must not alias param.
// ensures: param (and momentum_buf) updated in place; grad untouched.
template <typename T>
void sgd_step(int64_t count, T* param, const T* grad, T* momentum_buf, bool first_step, const SgdConfig& cfg) {
  validate_sgd(cfg);
  ARCLIGHT_CHECK(count >= 0, "sgd_step", "expected count >= 0, got ", count);
  if (count == 0) return;
  ARCLIGHT_CHECK(param != nullptr && grad != nullptr, "sgd_step", "expected non-null param and grad");
  ARCLIGHT_CHECK(cfg.momentum == 0.0 || momentum_buf != nullptr, "sgd_step", "momentum=", cfg.momentum,
                 " requires a momentum buffer of ", count, " values, got null");
  const T lr = T(cfg.lr), mom = T(cfg.momentum), damp = T(cfg.dampening), wd = T(cfg.weight_decay);
  const bool nesterov = cfg.nesterov;
  if (cfg.momentum == 0.0) {
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; ++i) {
      T unused = T(0);
      sgd_update(param[i], grad[i], unused, first_step, lr, mom, damp, wd, nesterov);
    }
  } else {
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; ++i)
      sgd_update(param[i], grad[i], momentum_buf[i], first_step, lr, mom, damp, wd, nesterov);
  }
}

// adamw_step: one AdamW update of `count` parameters, in place on param and the moment buffers.
// requires: step >= 1 is this update's count (1 on the first call; the buffers start at 0);
//   exp_avg, exp_avg_sq of count values; max_exp_avg_sq of count values iff cfg.amsgrad (else ignored).
// ensures: param, exp_avg, exp_avg_sq (, max_exp_avg_sq) updated in place; grad untouched.
template <typename T>
void adamw_step(int64_t count, T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, int64_t step,
                const AdamWConfig& cfg) {
  validate_adamw(cfg);
  ARCLIGHT_CHECK(count >= 0, "adamw_step", "expected count >= 0, got ", count);
  ARCLIGHT_CHECK(step >= 1, "adamw_step", "expected step >= 1 (the 1-based update count), got step=", step);
  if (count == 0) return;
  ARCLIGHT_CHECK(param != nullptr && grad != nullptr && exp_avg != nullptr && exp_avg_sq != nullptr, "adamw_step",
                 "expected non-null param, grad, exp_avg and exp_avg_sq");
  ARCLIGHT_CHECK(!cfg.amsgrad || max_exp_avg_sq != nullptr, "adamw_step",
                 "amsgrad requires a max_exp_avg_sq buffer of ", count, " values, got null");
  const AdamWScalars s = adamw_scalars(cfg, step);
  const T b1 = T(cfg.beta1), b2 = T(cfg.beta2), eps = T(cfg.eps);
  T* vmax = cfg.amsgrad ? max_exp_avg_sq : nullptr;
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i)
    adamw_update(param[i], grad[i], exp_avg[i], exp_avg_sq[i], vmax != nullptr ? vmax + i : nullptr, b1, b2, eps, s);
}

// agc_clip: unit-wise Adaptive Gradient Clipping of one parameter viewed as [units, unit_size] (units =
// the output dimension for weights of rank >= 2; pass units = 1 for vectors and scalars, as timm takes
// their whole norm). Per unit: G_i *= agc_scale(‖W_i‖, ‖G_i‖, λ, eps).
// requires: param and grad of units*unit_size values; clip_factor > 0, eps >= 0.
// ensures: grad scaled in place (rows under the bound untouched); param untouched.
template <typename T>
void agc_clip(int64_t units, int64_t unit_size, const T* param, T* grad, const AgcConfig& cfg) {
  const char* op = "agc_clip";
  ARCLIGHT_CHECK(units >= 0 && unit_size > 0, op, "expected units >= 0 and unit_size > 0, got units=", units,
                 " unit_size=", unit_size);
  ARCLIGHT_CHECK(std::isfinite(cfg.clip_factor) && cfg.clip_factor > 0.0, op,
                 "expected clip_factor > 0, got clip_factor=", cfg.clip_factor);
  ARCLIGHT_CHECK(std::isfinite(cfg.eps) && cfg.eps >= 0.0, op, "expected eps >= 0, got eps=", cfg.eps);
  if (units == 0) return;
  ARCLIGHT_CHECK(param != nullptr && grad != nullptr, op, "expected non-null param and grad");
#pragma omp parallel for schedule(static) if (units * unit_size > 65536)
  for (int64_t u = 0; u < units; ++u) {
    const T* w = param + u * unit_size;
    T* g = grad + u * unit_size;
    double ww = 0.0, gg = 0.0;
    for (int64_t i = 0; i < unit_size; ++i) {
      ww += double(w[i]) * double(w[i]);
      gg += double(g[i]) * double(g[i]);
    }
    const double f = agc_scale(std::sqrt(ww), std::sqrt(gg), cfg.clip_factor, cfg.eps);
    if (f != 1.0)
      for (int64_t i = 0; i < unit_size; ++i) g[i] = T(double(g[i]) * f);
  }
}

}  // namespace arclight::kernels::cpu
