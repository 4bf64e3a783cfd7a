// CPU kernels of the squeeze-excite gate scaling: y[n, c, :] = x[n, c, :] * g[n, c], the last step of an SE
// block (the gate g = sigmoid(expand(act(reduce(pool(x))))) comes from the small [n, c] path built of
// global_avg_pool, conv/linear and activation kernels), and its backward to x and to the gate. Also used for
// ECA's gate. Parallel over (image, channel) planes; the inner loops are unit stride and vectorise.
#pragma once

#include <cstdint>

#include "arclight/core/error.hpp"

namespace arclight::kernels::cpu {

inline void check_se_scale(const char* op, std::int64_t n, std::int64_t c, std::int64_t hw) {
  ARCLIGHT_CHECK(n >= 0 && c >= 0 && hw >= 0, op, "sizes must be >= 0, got n ", n, ", c ", c, ", h*w ", hw);
}

// Forward: y[n, c, k] = x[n, c, k] * gate[n, c].
// Requires: x, y [n, c, hw] (y may alias x: in place), gate [n, c]. Ensures: y overwritten.
template <typename T>
void se_scale_forward(std::int64_t n, std::int64_t c, std::int64_t hw, const T* x, const T* gate, T* y) {
  constexpr const char* op = "se_scale_forward";
  check_se_scale(op, n, c, hw);
  ARCLIGHT_CHECK(x != nullptr && gate != nullptr && y != nullptr, op, "pointers must not be null");
#pragma omp parallel for schedule(static)
  for (std::int64_t plane = 0; plane < n * c; ++plane) {
    const T g = gate[plane];
    const T* xp = x + plane * hw;
    T* yp = y + plane * hw;
#pragma omp simd
    for (std::int64_t k = 0; k < hw; ++k) yp[k] = xp[k] * g;
  }
}

// Backward: dx = dy * gate[n, c] broadcast; d_gate[n, c] = sum_k dy[n, c, k] * x[n, c, k].
// Requires: x, dy [n, c, hw], gate [n, c]; dx [n, c, hw] or null (may alias dy), d_gate [n, c] or null.
// Ensures: dx and d_gate overwritten (d_gate is computed before dx, so dx may alias dy).
template <typename T>
void se_scale_backward(std::int64_t n, std::int64_t c, std::int64_t hw, const T* x, const T* gate, const T* dy,
                       T* dx, T* d_gate) {
  constexpr const char* op = "se_scale_backward";
  check_se_scale(op, n, c, hw);
  ARCLIGHT_CHECK(x != nullptr && gate != nullptr && dy != nullptr, op, "pointers must not be null");
#pragma omp parallel for schedule(static)
  for (std::int64_t plane = 0; plane < n * c; ++plane) {
    const T* xp = x + plane * hw;
    const T* dp = dy + plane * hw;
    if (d_gate) {
      T acc = T(0);
#pragma omp simd reduction(+ : acc)
      for (std::int64_t k = 0; k < hw; ++k) acc += dp[k] * xp[k];
      d_gate[plane] = acc;
    }
    if (dx) {
      const T g = gate[plane];
      T* out = dx + plane * hw;
#pragma omp simd
      for (std::int64_t k = 0; k < hw; ++k) out[k] = dp[k] * g;
    }
  }
}

}  // namespace arclight::kernels::cpu
