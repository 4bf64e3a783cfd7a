// Adaptive Gradient Clipping (Brock et al. 2021, NFNets; timm's adaptive_clip_grad): per output unit i of
// a parameter W (row i of a Linear weight, output channel i of a conv weight; the whole tensor for biases,
// gains and scalars), if ‖G_i‖ > λ·max(‖W_i‖, eps) the unit's gradient is scaled down to that norm.
// Defaults λ = 0.01, eps = 1e-3 (METHOD.md §7). The optimizers apply it per parameter group (the final
// head is exempt); the math is kernels/cpu/optim.hpp's agc_clip.
#pragma once

#include <cmath>
#include <utility>
#include <vector>

#include "arclight/arclight.hpp"
#include "kernels/cpu/optim.hpp"

namespace arclight::optim {

using AgcConfig = kernels::AgcConfig;  // { clip_factor λ = 0.01, eps = 1e-3 }

namespace detail {
// param's gradient with contiguous storage, for kernels that update it in place through a flat pointer: a strided
// gradient is first replaced on the parameter by a contiguous copy. Undefined when the parameter has none.
inline Tensor contiguous_grad_(const Tensor& param) {
  Tensor grad = param.grad();
  if (grad.defined() && !grad.is_contiguous()) {
    grad = arclight::detail::copy_contiguous(grad);
    Tensor p = param;  // a handle: set_grad acts on the shared parameter
    p.set_grad(grad);
  }
  return grad;
}
}  // namespace detail

inline void validate_agc(const AgcConfig& c) {
  ARCLIGHT_CHECK(std::isfinite(c.clip_factor) && c.clip_factor > 0.0, "optim::agc",
                 "expected clip_factor > 0, got clip_factor=", c.clip_factor);
  ARCLIGHT_CHECK(std::isfinite(c.eps) && c.eps >= 0.0, "optim::agc", "expected eps >= 0, got eps=", c.eps);
}

// adaptive_clip_grad_: clips the gradients of `params` unit-wise, in place (a parameter without a gradient is
// skipped; a non-contiguous gradient is replaced by a clipped contiguous copy). CPU parameters run
// kernels::cpu::agc_clip (norms in double); all device parameters together run the multi-tensor device kernel
// (kernels/cuda/optim.cuh agc_clip, one launch per 48 tensors, norms in float).
// requires: each param a contiguous floating tensor (f32 on a device); its grad (when present) of the same
//   shape, dtype and device.
// ensures: units whose gradient norm is below the bound are untouched; the parameters are untouched.
inline void adaptive_clip_grad_(const std::vector<Tensor>& params, const AgcConfig& cfg = {}) {
  validate_agc(cfg);
  std::vector<std::pair<Tensor, Tensor>> device;
  for (const Tensor& param : params) {
    Tensor grad = param.grad();
    if (!grad.defined()) continue;
    ARCLIGHT_CHECK(grad.shape() == param.shape() && grad.dtype() == param.dtype() && grad.device() == param.device(),
                   "optim::agc", "gradient ", grad.str(), " does not match parameter ", param.str());
    ARCLIGHT_CHECK(param.is_contiguous(), "optim::agc", "expected a contiguous parameter, got strides ",
                   shape_str(param.strides()), " of ", param.str());
    grad = detail::contiguous_grad_(param);
    const std::int64_t n = param.numel();
    if (n == 0) continue;
    if (param.device().is_cuda()) {
      ARCLIGHT_CHECK(param.dtype() == DType::f32, "optim::agc", "expected a float32 device parameter, got ",
                     param.str());
      device.emplace_back(param, grad);
      continue;
    }
    const std::int64_t units = param.dim() >= 2 ? param.shape()[0] : 1;
    dispatch_floating(param.dtype(), "optim::agc", [&]<typename T>() {
      kernels::cpu::agc_clip<T>(units, n / units, param.data_ptr<T>(), grad.data_ptr<T>(), cfg);
    });
  }
  if (!device.empty()) cuda::detail::agc_clip(device, cfg);
}

// The same for one parameter.
inline void adaptive_clip_grad_(const Tensor& param, const AgcConfig& cfg = {}) {
  adaptive_clip_grad_(std::vector<Tensor>{param}, cfg);
}

}  // namespace arclight::optim
