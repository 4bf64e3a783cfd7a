// Softmax and log-softmax along one dim of a contiguous tensor seen as [outer, dim, inner]. Stable for
// large |logits| (±1e4 and beyond): the row max is subtracted before exp, and log-softmax is computed as
// x − max − log Σ exp(x − max) so nothing overflows. Threads split the (outer, inner) rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <omp.h>

namespace arclight::kernels::cpu {

struct SoftmaxShape {
  std::int64_t outer = 1, dim = 1, inner = 1;
};

// y = softmax(x) (or log_softmax when Log). x and y may not alias.
template <typename T, bool Log>
void softmax_forward(const SoftmaxShape& s, const T* x, T* y) {
  const std::int64_t rows = s.outer * s.inner;
#pragma omp parallel for schedule(static) if (rows * s.dim > 32768)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t o = r / s.inner, i = r % s.inner;
    const T* xr = x + o * s.dim * s.inner + i;
    T* yr = y + o * s.dim * s.inner + i;
    T mx = xr[0];
    for (std::int64_t j = 1; j < s.dim; ++j) mx = std::max(mx, xr[j * s.inner]);
    if (std::isinf(mx) && mx < 0) mx = T(0);  // an all −inf row: avoid (−inf) − (−inf)
    double sum = 0;
    for (std::int64_t j = 0; j < s.dim; ++j) sum += std::exp(static_cast<double>(xr[j * s.inner] - mx));
    if constexpr (Log) {
      const T lse = static_cast<T>(std::log(sum));
      for (std::int64_t j = 0; j < s.dim; ++j) yr[j * s.inner] = xr[j * s.inner] - mx - lse;
    } else {
      const double inv = 1.0 / sum;
      for (std::int64_t j = 0; j < s.dim; ++j)
        yr[j * s.inner] = static_cast<T>(std::exp(static_cast<double>(xr[j * s.inner] - mx)) * inv);
    }
  }
}

// Backward from the output y and its gradient gy:
//   softmax:     gx = y ⊙ (gy − Σ gy ⊙ y)
//   log_softmax: gx = gy − exp(y) ⊙ Σ gy
template <typename T, bool Log>
void softmax_backward(const SoftmaxShape& s, const T* y, const T* gy, T* gx) {
  const std::int64_t rows = s.outer * s.inner;
#pragma omp parallel for schedule(static) if (rows * s.dim > 32768)
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t base = (r / s.inner) * s.dim * s.inner + r % s.inner;
    double acc = 0;
    for (std::int64_t j = 0; j < s.dim; ++j) {
      const std::int64_t q = base + j * s.inner;
      acc += Log ? static_cast<double>(gy[q]) : static_cast<double>(gy[q]) * static_cast<double>(y[q]);
    }
    for (std::int64_t j = 0; j < s.dim; ++j) {
      const std::int64_t q = base + j * s.inner;
      if constexpr (Log) gx[q] = static_cast<T>(gy[q] - std::exp(static_cast<double>(y[q])) * acc);
      else gx[q] = static_cast<T>(static_cast<double>(y[q]) * (static_cast<double>(gy[q]) - acc));
    }
  }
}

}  // namespace arclight::kernels::cpu
