// Per-element optimizer updates and Adaptive Gradient Clipping, shared by the CPU kernels
// (kernels/cpu/optim.hpp) and the CUDA fused optimizer steps. Semantics are PyTorch's single-tensor
// torch.optim.SGD / torch.optim.AdamW (1.13) and timm's adaptive_clip_grad:
//   SGD:   d = g + wd·p;  momentum: buf = d (first step) or momentum·buf + (1 − dampening)·d;
//          d = nesterov ? d + momentum·buf : buf;  p −= lr·d
//   AdamW: p *= 1 − lr·wd;  m = β1·m + (1 − β1)·g;  v = β2·v + (1 − β2)·g²;  (amsgrad: v̂ = max(v̂, v))
//          p −= lr/(1 − β1^t) · m / (sqrt(v or v̂)/sqrt(1 − β2^t) + eps)
//   AGC:   per unit i: max_norm = λ·max(‖W_i‖, eps); if ‖G_i‖ ≥ max_norm: G_i *= max_norm / max(‖G_i‖, 1e-6)
// The hyper-parameters travel as doubles; the per-tensor scalars (bias corrections) are formed once in
// double by adamw_scalars, then each element update runs in the parameter's type.
#pragma once

#include <math.h>
#include <stdint.h>

#include "kernels/common/macros.hpp"

namespace arclight::kernels {

struct SgdConfig {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;  // requires momentum > 0 and dampening = 0 (PyTorch's rule)
};

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
};

struct AgcConfig {
  double clip_factor = 0.01;  // λ
  double eps = 1e-3;          // floor of the weight norm
};

// Floor of the gradient norm in AGC's divisor (timm: grad_norm.clamp(min=1e-6)).
inline constexpr double kAgcGradNormFloor = 1e-6;

// One SGD element update, in place on param and (when momentum ≠ 0) on buf. first_step: the momentum
// buffer does not exist yet (PyTorch clones d into it instead of decaying).
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE void sgd_update(T& param, T grad, T& buf, bool first_step, T lr, T momentum,
                                                     T dampening, T weight_decay, bool nesterov) {
  T d = grad;
  if (weight_decay != T(0)) d += weight_decay * param;
  if (momentum != T(0)) {
    buf = first_step ? d : momentum * buf + (T(1) - dampening) * d;
    d = nesterov ? d + momentum * buf : buf;
  }
  param -= lr * d;
}

// Per-tensor AdamW scalars for step count `step` (1 on the first update).
struct AdamWScalars {
  double step_size;              // lr / (1 − β1^step)
  double bias_correction2_sqrt;  // sqrt(1 − β2^step)
  double decay_factor;           // 1 − lr·wd
};

ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE AdamWScalars adamw_scalars(const AdamWConfig& c, int64_t step) {
  AdamWScalars s;
  const double bc1 = 1.0 - ::pow(c.beta1, double(step));
  const double bc2 = 1.0 - ::pow(c.beta2, double(step));
  s.step_size = c.lr / bc1;
  s.bias_correction2_sqrt = ::sqrt(bc2);
  s.decay_factor = 1.0 - c.lr * c.weight_decay;
  return s;
}

// One AdamW element update, in place on param, exp_avg, exp_avg_sq and (amsgrad) max_exp_avg_sq.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE void adamw_update(T& param, T grad, T& exp_avg, T& exp_avg_sq, T* max_exp_avg_sq,
                                                       T beta1, T beta2, T eps, const AdamWScalars& s) {
  param *= T(s.decay_factor);
  exp_avg = beta1 * exp_avg + (T(1) - beta1) * grad;
  exp_avg_sq = beta2 * exp_avg_sq + (T(1) - beta2) * grad * grad;
  T second = exp_avg_sq;
  if (max_exp_avg_sq != nullptr) {
    if (second > *max_exp_avg_sq) *max_exp_avg_sq = second;
    second = *max_exp_avg_sq;
  }
  const T denom = ::sqrt(second) / T(s.bias_correction2_sqrt) + eps;
  param -= T(s.step_size) * exp_avg / denom;
}

// AGC factor of one unit from its weight and gradient L2 norms: 1 when ‖G‖ < λ·max(‖W‖, eps), else the
// factor that brings ‖G‖ down to that bound.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T agc_scale(T weight_norm, T grad_norm, T clip_factor, T eps) {
  const T max_norm = (weight_norm < eps ? eps : weight_norm) * clip_factor;
  if (grad_norm < max_norm) return T(1);
  const T floor_g = T(kAgcGradNormFloor);
  return max_norm / (grad_norm < floor_g ? floor_g : grad_norm);
}

}  // namespace arclight::kernels
