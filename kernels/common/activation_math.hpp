// Scalar math of the pointwise activations (ReLU, SiLU, GELU in its erf form, Sigmoid, PReLU) and their
// derivatives, written once for the CPU kernels (kernels/cpu/activation.hpp, the fused BN+activation in
// kernels/cpu/batch_norm.hpp) and the CUDA kernels. Everything here is ARCLIGHT_HOST_DEVICE, has no
// exceptions and no iostream, and calls only the C math functions that both libm and CUDA provide
// (expf/exp, erff/erf, sqrtf/sqrt) through float/double overloads, so nvcc can compile this file.
#pragma once

#include <math.h>

#include "kernels/common/macros.hpp"

namespace arclight::kernels {

// Which pointwise activation a kernel applies. Identity lets fused kernels (BN+act) switch it off.
enum class Activation : int { Identity = 0, ReLU = 1, SiLU = 2, GELU = 3, Sigmoid = 4 };

// ---- float/double overloads of the C math functions (the C names, so that device code has them) ----
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE float math_exp(float x) { return expf(x); }
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE double math_exp(double x) { return exp(x); }
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE float math_erf(float x) { return erff(x); }
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE double math_erf(double x) { return erf(x); }
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE float math_erfc(float x) { return erfcf(x); }
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE double math_erfc(double x) { return erfc(x); }
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE float math_sqrt(float x) { return sqrtf(x); }
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE double math_sqrt(double x) { return sqrt(x); }

// ReLU: max(x, 0). The derivative at 0 is taken as 0 (PyTorch's convention: grad = dy * (x > 0)).
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T relu(T x) {
  return x > T(0) ? x : T(0);
}
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T relu_grad(T x) {
  return x > T(0) ? T(1) : T(0);
}

// Sigmoid 1/(1+e^-x), evaluated so that exp never overflows: for x < 0 use e^x/(1+e^x).
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + math_exp(-x));
  const T e = math_exp(x);
  return e / (T(1) + e);
}
// d sigmoid / dx = s (1 - s).
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T sigmoid_grad(T x) {
  const T s = sigmoid(x);
  return s * (T(1) - s);
}

// SiLU (swish): x * sigmoid(x); derivative s (1 + x (1 - s)).
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T silu(T x) {
  return x * sigmoid(x);
}
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T silu_grad(T x) {
  const T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

// GELU, exact erf form (PyTorch's default approximate='none'): x Phi(x) with Phi(x) = 0.5 (1 + erf(x / sqrt 2))
// written as 0.5 erfc(-x / sqrt 2), which keeps full relative precision in the negative tail where
// 1 + erf(...) cancels; derivative Phi(x) + x phi(x) with phi the standard normal density.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T gelu(T x) {
  const T inv_sqrt2 = T(0.70710678118654752440);
  return T(0.5) * x * math_erfc(-x * inv_sqrt2);
}
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T gelu_grad(T x) {
  const T inv_sqrt2 = T(0.70710678118654752440);
  const T inv_sqrt_2pi = T(0.39894228040143267794);
  const T cdf = T(0.5) * math_erfc(-x * inv_sqrt2);
  return cdf + x * inv_sqrt_2pi * math_exp(T(-0.5) * x * x);
}

// PReLU with slope a: x for x > 0, a x otherwise. d/dx = 1 or a; d/da = 0 or x.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T prelu(T x, T a) {
  return x > T(0) ? x : a * x;
}
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T prelu_grad_x(T x, T a) {
  return x > T(0) ? T(1) : a;
}
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T prelu_grad_a(T x) {
  return x > T(0) ? T(0) : x;
}

// Dispatch on the runtime activation. A switch per element is cheap next to exp/erf and keeps one code
// path for every fused kernel; the hot unfused loops in kernels/cpu/activation.hpp switch outside the loop.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T activation_apply(Activation act, T x) {
  switch (act) {
    case Activation::ReLU: return relu(x);
    case Activation::SiLU: return silu(x);
    case Activation::GELU: return gelu(x);
    case Activation::Sigmoid: return sigmoid(x);
    default: return x;
  }
}
// d act(x) / dx evaluated at the pre-activation x.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T activation_derivative(Activation act, T x) {
  switch (act) {
    case Activation::ReLU: return relu_grad(x);
    case Activation::SiLU: return silu_grad(x);
    case Activation::GELU: return gelu_grad(x);
    case Activation::Sigmoid: return sigmoid_grad(x);
    default: return T(1);
  }
}

}  // namespace arclight::kernels
