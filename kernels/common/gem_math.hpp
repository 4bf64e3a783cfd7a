// Scalar math of GeM (generalised-mean) pooling, shared by the CPU kernels (kernels/cpu/gem.hpp) and the
// CUDA kernels. GeM maps each (n, c) plane of hw values to one number:
//   y = (M)^(1/p),  M = (1/hw) * sum_i max(x_i, eps)^p,
// with p a learnable scalar (METHOD.md §2: init 3, eps 1e-6). The plane loops live in the kernels; this
// file holds the per-element and per-plane formulas so both devices compute the very same numbers.
// Everything here is ARCLIGHT_HOST_DEVICE and uses only C math from <math.h> (overloaded for float and
// double in both libstdc++ and CUDA), no exceptions, no iostream.
#pragma once

#include <math.h>
#include <stdint.h>

#include "kernels/common/macros.hpp"

namespace arclight::kernels {

// Default clamp of GeM's input (METHOD.md §2).
inline constexpr double kGemDefaultEps = 1e-6;

// Shape of a GeM call: x is [n, c, hw] contiguous (NCHW with H*W flattened), y is [n, c].
struct GemShape {
  int64_t n = 0;
  int64_t c = 0;
  int64_t hw = 0;
};

// max(x, eps) that lets NaN through (a NaN input stays NaN so the trainer's non-finite check sees it).
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T gem_clamp(T x, T eps) {
  return x < eps ? eps : x;
}

// Whether the clamp passes the gradient: torch's clamp_min backward is grad * (x >= eps).
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE bool gem_active(T x, T eps) {
  return x >= eps;
}

// xc^p for a clamped (positive) value xc.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T gem_pow(T xc, T p) {
  return ::pow(xc, p);
}

// y = (sum_pow / hw)^(1/p), from the plane's sum of xc^p.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T gem_output(T sum_pow, T hw, T p) {
  return ::pow(sum_pow / hw, T(1) / p);
}

// Per-plane factor of dy/dx_i:  dy/dx_i = coef * xc_i^(p-1) * [x_i >= eps], coef = y / sum_pow.
// (Derivation: dy/dM = y / (p M), dM/dx_i = p xc^(p-1) / hw, M hw = sum_pow.)
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T gem_grad_x_coef(T y, T sum_pow) {
  return y / sum_pow;
}

// dy/dx_i given the plane coefficient (gem_grad_x_coef) and the element: coef * xc^(p-1), or 0 if clamped.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T gem_grad_x(T coef, T x, T eps, T p) {
  return gem_active(x, eps) ? coef * ::pow(gem_clamp(x, eps), p - T(1)) : T(0);
}

// dy/dp for one plane:  y * ( -log(M)/p^2 + (sum_i xc^p log xc) / (p * sum_pow) ),  M = sum_pow / hw.
// (ln y = ln(M)/p, so d ln y/dp = -ln M / p^2 + (dM/dp)/(p M), dM/dp = (1/hw) sum xc^p ln xc.)
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T gem_grad_p(T y, T sum_pow, T sum_pow_log, T hw, T p) {
  return y * (-::log(sum_pow / hw) / (p * p) + sum_pow_log / (p * sum_pow));
}

}  // namespace arclight::kernels
