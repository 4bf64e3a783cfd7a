// CPU kernels of the pointwise activations (ReLU, SiLU, GELU-erf, Sigmoid; kernels/common/activation_math.hpp
// holds the scalar math) and of PReLU with a single or a per-channel slope, forward and backward. Elementwise
// loops are OpenMP-parallel and vectorisable (the activation is switched once, outside the loop; float SiLU and
// Sigmoid use kernels/cpu/vec_math.hpp's polynomial exp, double keeps libm). PReLU's
// slope gradient is reduced per channel inside one thread, so it is deterministic.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "arclight/core/error.hpp"
#include "kernels/common/activation_math.hpp"
#include "kernels/cpu/vec_math.hpp"

namespace arclight::kernels::cpu {

using kernels::Activation;

// Name of an activation, for messages and logs.
inline const char* activation_name(Activation act) {
  switch (act) {
    case Activation::Identity: return "identity";
    case Activation::ReLU: return "relu";
    case Activation::SiLU: return "silu";
    case Activation::GELU: return "gelu";
    case Activation::Sigmoid: return "sigmoid";
  }
  return "unknown";
}

namespace detail {
// Below this many elements a pointwise loop runs on the calling thread (waking the team costs more).
inline constexpr std::int64_t kParallelGrain = 1 << 15;
template <typename T, typename F>
void map_elementwise(std::int64_t n, F&& f) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelGrain)
  for (std::int64_t i = 0; i < n; ++i) f(i);
}
inline void check_activation(const char* op, Activation act, std::int64_t n) {
  ARCLIGHT_CHECK(n >= 0, op, "element count must be >= 0, got ", n);
  const int a = static_cast<int>(act);
  ARCLIGHT_CHECK(a >= 0 && a <= static_cast<int>(Activation::Sigmoid), op, "unknown activation id ", a);
}
}  // namespace detail

// y = act(x) elementwise over n elements.
// Requires: x and y hold n elements; y may alias x (in place). Ensures: y is overwritten.
template <typename T>
void activation_forward(Activation act, const T* x, T* y, std::int64_t n) {
  detail::check_activation("activation_forward", act, n);
  switch (act) {
    case Activation::ReLU: detail::map_elementwise<T>(n, [=](std::int64_t i) { y[i] = relu(x[i]); }); break;
    case Activation::SiLU: detail::map_elementwise<T>(n, [=](std::int64_t i) { y[i] = act_silu(x[i]); }); break;
    case Activation::GELU: detail::map_elementwise<T>(n, [=](std::int64_t i) { y[i] = gelu(x[i]); }); break;
    case Activation::Sigmoid: detail::map_elementwise<T>(n, [=](std::int64_t i) { y[i] = act_sigmoid(x[i]); }); break;
    case Activation::Identity: detail::map_elementwise<T>(n, [=](std::int64_t i) { y[i] = x[i]; }); break;
  }
}

// dx = dy * act'(x) elementwise (x is the forward input, the pre-activation).
// Requires: x, dy, dx hold n elements; dx may alias dy (in place) but not x unless x is dead afterwards.
// Ensures: dx is overwritten.
template <typename T>
void activation_backward(Activation act, const T* x, const T* dy, T* dx, std::int64_t n) {
  detail::check_activation("activation_backward", act, n);
  switch (act) {
    case Activation::ReLU:
      detail::map_elementwise<T>(n, [=](std::int64_t i) { dx[i] = dy[i] * relu_grad(x[i]); });
      break;
    case Activation::SiLU:
      detail::map_elementwise<T>(n, [=](std::int64_t i) { dx[i] = dy[i] * act_silu_grad(x[i]); });
      break;
    case Activation::GELU:
      detail::map_elementwise<T>(n, [=](std::int64_t i) { dx[i] = dy[i] * gelu_grad(x[i]); });
      break;
    case Activation::Sigmoid:
      detail::map_elementwise<T>(n, [=](std::int64_t i) { dx[i] = dy[i] * act_sigmoid_grad(x[i]); });
      break;
    case Activation::Identity: detail::map_elementwise<T>(n, [=](std::int64_t i) { dx[i] = dy[i]; }); break;
  }
}

// Sizes of a PReLU over x [n, c, inner] (inner = H*W for images, 1 for [N, C] features) with num_weights
// slopes: 1 (shared, PyTorch's default) or c (per channel).
struct PReluShape {
  std::int64_t n = 0, c = 0, inner = 1;
  std::int64_t num_weights = 1;
};

inline void check_prelu_shape(const PReluShape& s, const char* op = "prelu") {
  ARCLIGHT_CHECK(s.n >= 0 && s.c >= 1 && s.inner >= 0, op, "expected input sizes [n >= 0, c >= 1, inner >= 0], got [",
                 s.n, ", ", s.c, ", ", s.inner, "]");
  ARCLIGHT_CHECK(s.num_weights == 1 || s.num_weights == s.c, op, "weight has ", s.num_weights,
                 " elements, expected 1 or the number of channels (", s.c, ")");
}

// PReLU shape from input dims as torch.nn.PReLU sees them: the channel dimension is dim 1 ([N, C, ...]);
// a rank-1 input has no channel dimension. num_weights must be 1 or the channel count.
inline PReluShape make_prelu_shape(std::span<const std::int64_t> dims, std::int64_t num_weights,
                                   const char* op = "prelu") {
  ARCLIGHT_CHECK(!dims.empty(), op, "expected an input of rank >= 1, got a scalar");
  PReluShape s;
  s.n = dims[0];
  s.c = dims.size() >= 2 ? dims[1] : 1;
  s.inner = 1;
  for (std::size_t d = 2; d < dims.size(); ++d) s.inner *= dims[d];
  s.num_weights = num_weights;
  ARCLIGHT_CHECK(num_weights == 1 || dims.size() >= 2, op, "a rank-1 input takes a single weight, got ",
                 num_weights);
  check_prelu_shape(s, op);
  return s;
}

// y = x for x > 0, a_c x otherwise.
// Requires: x, y [n, c, inner] (y may alias x), weight [num_weights]. Ensures: y is overwritten.
template <typename T>
void prelu_forward(const PReluShape& s, const T* x, const T* weight, T* y) {
  check_prelu_shape(s, "prelu_forward");
  const std::int64_t inner = s.inner, nw = s.num_weights;
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t n = 0; n < s.n; ++n) {
    for (std::int64_t c = 0; c < s.c; ++c) {
      const T a = weight[nw == 1 ? 0 : c];
      const T* xp = x + (n * s.c + c) * inner;
      T* yp = y + (n * s.c + c) * inner;
#pragma omp simd
      for (std::int64_t k = 0; k < inner; ++k) yp[k] = prelu(xp[k], a);
    }
  }
}

// PReLU backward: dx = dy * (x > 0 ? 1 : a_c); d_weight[c] = sum over n, inner (and over c when shared) of
// dy * (x > 0 ? 0 : x).
// Requires: as prelu_forward; dy, dx [n, c, inner] (dx may alias dy), dx null to skip, d_weight
// [num_weights] or null to skip. Ensures: dx and d_weight are overwritten (not accumulated).
template <typename T>
void prelu_backward(const PReluShape& s, const T* x, const T* weight, const T* dy, T* dx, T* d_weight) {
  check_prelu_shape(s, "prelu_backward");
  const std::int64_t inner = s.inner, nw = s.num_weights;
  if (d_weight) {
    // Computed before dx so that dx may alias dy. Per-channel partial sums first (parallel over channels,
    // deterministic), then folded for a shared slope.
    std::int64_t nc = s.c;
    std::vector<double> partial(static_cast<std::size_t>(nc));
#pragma omp parallel for schedule(static)
    for (std::int64_t c = 0; c < nc; ++c) {
      double acc = 0.0;
      for (std::int64_t n = 0; n < s.n; ++n) {
        const T* xp = x + (n * s.c + c) * inner;
        const T* dp = dy + (n * s.c + c) * inner;
        T row = T(0);
#pragma omp simd reduction(+ : row)
        for (std::int64_t k = 0; k < inner; ++k) row += dp[k] * prelu_grad_a(xp[k]);
        acc += double(row);
      }
      partial[c] = acc;
    }
    if (nw == 1) {
      double total = 0.0;
      for (std::int64_t c = 0; c < nc; ++c) total += partial[c];
      d_weight[0] = T(total);
    } else {
      for (std::int64_t c = 0; c < nc; ++c) d_weight[c] = T(partial[c]);
    }
  }
  if (dx) {
#pragma omp parallel for collapse(2) schedule(static)
    for (std::int64_t n = 0; n < s.n; ++n) {
      for (std::int64_t c = 0; c < s.c; ++c) {
        const T a = weight[nw == 1 ? 0 : c];
        const T* xp = x + (n * s.c + c) * inner;
        const T* dp = dy + (n * s.c + c) * inner;
        T* out = dx + (n * s.c + c) * inner;
#pragma omp simd
        for (std::int64_t k = 0; k < inner; ++k) out[k] = dp[k] * prelu_grad_x(xp[k], a);
      }
    }
  }
}

}  // namespace arclight::kernels::cpu
