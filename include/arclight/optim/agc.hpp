// Adaptive Gradient Clipping (Brock et al. 2021, NFNets; timm's adaptive_clip_grad): per output unit i of
// a parameter W (row i of a Linear weight, output channel i of a conv weight; the whole tensor for biases,
// gains and scalars), if ‖G_i‖ > λ·max(‖W_i‖, eps) the unit's gradient is scaled down to that norm.
// Defaults λ = 0.01, eps = 1e-3 (METHOD.md §7). The optimizers apply it per parameter group (the final
// head is exempt); the math is kernels/cpu/optim.hpp's agc_clip.
#pragma once

#include <cmath>
#include <vector>

#include "arclight/arclight.hpp"
#include "kernels/cpu/optim.hpp"

namespace arclight::optim {

using AgcConfig = kernels::AgcConfig;  // { clip_factor λ = 0.01, eps = 1e-3 }

inline void validate_agc(const AgcConfig& c) {
  ARCLIGHT_CHECK(std::isfinite(c.clip_factor) && c.clip_factor > 0.0, "optim::agc",
                 "expected clip_factor > 0, got clip_factor=", c.clip_factor);
  ARCLIGHT_CHECK(std::isfinite(c.eps) && c.eps >= 0.0, "optim::agc", "expected eps >= 0, got eps=", c.eps);
}

// adaptive_clip_grad_: clips param.grad unit-wise, in place (a parameter without a gradient is skipped; a
// non-contiguous gradient is replaced by a clipped contiguous copy).
// requires: param a contiguous floating CPU tensor; its grad (when present) of the same shape and dtype.
// ensures: units whose gradient norm is below the bound are untouched; the parameter is untouched.
inline void adaptive_clip_grad_(const Tensor& param, const AgcConfig& cfg = {}) {
  validate_agc(cfg);
  Tensor grad = param.grad();
  if (!grad.defined()) return;
  ARCLIGHT_CHECK(grad.shape() == param.shape() && grad.dtype() == param.dtype(), "optim::agc", "gradient ",
                 grad.str(), " does not match parameter ", param.str());
  ARCLIGHT_CHECK(param.is_contiguous(), "optim::agc", "expected a contiguous parameter, got strides ",
                 shape_str(param.strides()), " of ", param.str());
  if (!grad.is_contiguous()) {
    grad = arclight::detail::copy_contiguous(grad);
    Tensor p = param;
    p.set_grad(grad);
  }
  const std::int64_t n = param.numel();
  if (n == 0) return;
  const std::int64_t units = param.dim() >= 2 ? param.shape()[0] : 1;
  if (param.device().is_cuda()) {
    // The same rule from device ops: per unit (output channel), g ← g·min(1, λ·max(‖w‖, eps)/max(‖g‖, 1e-6)),
    // applied only where ‖g‖ exceeds λ·max(‖w‖, eps).
    std::vector<std::int64_t> dims;
    for (std::int64_t d = param.dim() >= 2 ? 1 : 0; d < param.dim(); ++d) dims.push_back(d);
    const Tensor max_norm = ops::mul(ops::clamp_min(ops::norm(param, dims, true), cfg.eps), cfg.clip_factor);
    const Tensor g_norm = ops::norm(grad, dims, true);
    const Tensor scale = ops::where(ops::gt(g_norm, max_norm),
                                    ops::div(max_norm, ops::clamp_min(g_norm, kernels::kAgcGradNormFloor)),
                                    ones({}, grad.dtype(), grad.device()));
    Tensor gm = grad;
    ops::mul_(gm, scale);
    return;
  }
  dispatch_floating(param.dtype(), "optim::agc", [&]<typename T>() {
    kernels::cpu::agc_clip<T>(units, n / units, param.data_ptr<T>(), grad.data_ptr<T>(), cfg);
  });
}

inline void adaptive_clip_grad_(const std::vector<Tensor>& params, const AgcConfig& cfg = {}) {
  for (const auto& p : params) adaptive_clip_grad_(p, cfg);
}

}  // namespace arclight::optim
