// CPU kernels of GeM pooling: y[n,c] = (mean_hw max(x,eps)^p)^(1/p) and its backward to x and to the
// learnable scalar p. Raw pointers + GemShape; the scalar math is kernels/common/gem_math.hpp (shared
// with CUDA); ops/gem.hpp validates tensors and calls these. Planes are independent and split across
// OpenMP threads; per-plane sums accumulate in double for both float and double inputs.
#pragma once

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "arclight/core/error.hpp"
#include "kernels/common/gem_math.hpp"

namespace arclight::kernels::cpu {

namespace detail {
inline void gem_validate(const char* op, const GemShape& s, double p, double eps) {
  ARCLIGHT_CHECK(s.n >= 0 && s.c >= 0, op, "expected n >= 0 and c >= 0, got n=", s.n, " c=", s.c);
  ARCLIGHT_CHECK(s.hw > 0, op, "expected a non-empty spatial extent (hw > 0), got hw=", s.hw);
  ARCLIGHT_CHECK(std::isfinite(p) && p > 0.0, op, "expected a finite exponent p > 0, got p=", p);
  ARCLIGHT_CHECK(std::isfinite(eps) && eps > 0.0, op, "expected a finite clamp eps > 0, got eps=", eps);
}
}  // namespace detail

// gem_forward: y[i] = (Σ_h max(x[i*hw+h], eps)^p / hw)^(1/p) for every plane i < n*c.
// requires: x holds n*c*hw values, y holds n*c; p > 0, eps > 0 (else arclight::Error).
// ensures: y written (not accumulated); x untouched.
template <typename T>
void gem_forward(const GemShape& shape, const T* x, T p, T eps, T* y) {
  detail::gem_validate("gem_forward", shape, double(p), double(eps));
  const int64_t planes = shape.n * shape.c;
  if (planes == 0) return;
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, "gem_forward", "expected non-null x and y");
  const int64_t hw = shape.hw;
#pragma omp parallel for schedule(static) if (planes * hw > 16384)
  for (int64_t i = 0; i < planes; ++i) {
    const T* xi = x + i * hw;
    double sum = 0.0;
    for (int64_t h = 0; h < hw; ++h) sum += double(gem_pow(gem_clamp(xi[h], eps), p));  // pow in T, sum in double
    y[i] = T(gem_output(sum, double(hw), double(p)));
  }
}

// gem_backward: gradients of L = Σ_i gy[i]·y[i] (y recomputed from x, so y need not be saved).
//   gx[i*hw+h] = gy[i]·y[i]·max(x,eps)^(p−1)/Σ_h max(x,eps)^p · [x >= eps]
//   *gp        = Σ_i gy[i]·dy[i]/dp   (see gem_grad_p)
// requires: shapes as gem_forward; gy holds n*c; gx (n*c*hw) and gp (one value) may each be null to skip.
// ensures: gx and *gp written (not accumulated). *gp sums in a fixed order for a fixed thread count.
template <typename T>
void gem_backward(const GemShape& shape, const T* x, const T* gy, T p, T eps, T* gx, T* gp) {
  detail::gem_validate("gem_backward", shape, double(p), double(eps));
  const int64_t planes = shape.n * shape.c;
  if (gp != nullptr) *gp = T(0);
  if (planes == 0) return;
  ARCLIGHT_CHECK(x != nullptr && gy != nullptr, "gem_backward", "expected non-null x and gy");
  const int64_t hw = shape.hw;
  const double pd = double(p);
  std::vector<double> partial(size_t(omp_get_max_threads()), 0.0);
#pragma omp parallel if (planes * hw > 16384)
  {
    double local_gp = 0.0;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < planes; ++i) {
      const T* xi = x + i * hw;
      T* gxi = gx != nullptr ? gx + i * hw : nullptr;
      double sum_pow = 0.0;
      double sum_pow_log = 0.0;
      // One pow and one log per element: xc^(p−1) = xc^p / xc is parked in gx, scaled once the plane's
      // sum is known (the plane is still in cache).
      // Element math in T (xc^p = exp(p·log xc) shares its log with the p-gradient), sums in double.
      for (int64_t h = 0; h < hw; ++h) {
        const T xc = gem_clamp(xi[h], eps);
        const T lx = std::log(xc);
        const T t = std::exp(p * lx);
        sum_pow += double(t);
        sum_pow_log += double(t) * double(lx);
        if (gxi != nullptr) gxi[h] = gem_active(xi[h], eps) ? t / xc : T(0);
      }
      const double g = double(gy[i]);
      if (!(sum_pow > 0.0)) {
        // Every xc^p underflowed (all x <= eps and a large p in float): y = 0 and no gradient flows; this
        // avoids 0/0 in the coefficients below.
        if (gxi != nullptr)
          for (int64_t h = 0; h < hw; ++h) gxi[h] = T(0);
        continue;
      }
      const double y = gem_output(sum_pow, double(hw), pd);
      if (gxi != nullptr) {
        const double coef = g * gem_grad_x_coef(y, sum_pow);
        for (int64_t h = 0; h < hw; ++h) gxi[h] = T(coef * double(gxi[h]));
      }
      local_gp += g * gem_grad_p(y, sum_pow, sum_pow_log, double(hw), pd);
    }
    partial[size_t(omp_get_thread_num())] = local_gp;
  }
  if (gp != nullptr) {
    double total = 0.0;
    for (double v : partial) total += v;
    *gp = T(total);
  }
}

}  // namespace arclight::kernels::cpu
