// Helpers shared by the convolution-block kernel tests: seeded random fills, garbage pre-fills, closeness
// checks with a readable first failure, naive double-precision references of the convolution, and a central
// finite-difference gradient checker for a scalar loss L = sum(r * y) with a fixed random r.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/core/rng.hpp"
#include "kernels/common/conv_shape.hpp"

namespace arclight::test {

using kernels::Conv2dShape;

// Output buffers with a tail: guarded_garbage (below) gives n garbage (NaN) values followed by kGuard guard
// values, so a kernel that writes past its output is caught (guard_intact); head() drops the tail again.
inline constexpr std::int64_t kGuard = 64;
inline constexpr double kGuardValue = 1e30;
template <typename T>
::testing::AssertionResult guard_intact(const std::vector<T>& v, std::int64_t n) {
  for (std::int64_t i = n; i < n + kGuard; ++i)
    if (v[std::size_t(i)] != T(kGuardValue))
      return ::testing::AssertionFailure() << "wrote past the output: element " << i - n << " after the end is "
                                           << v[std::size_t(i)];
  return ::testing::AssertionSuccess();
}
template <typename T>
std::vector<T> head(const std::vector<T>& v, std::int64_t n) {
  return std::vector<T>(v.begin(), v.begin() + n);
}

// Uniform values in [lo, hi) from a seeded Philox stream.
inline std::vector<double> random_vector(std::int64_t n, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  RandomStream rs(seed, 7);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& e : v) e = rs.uniform(lo, hi);
  return v;
}

// Values with |v| >= margin (random sign), so that kinks at 0 (ReLU, PReLU) stay out of finite differences.
inline std::vector<double> random_away_from_zero(std::int64_t n, std::uint64_t seed, double margin = 0.05) {
  RandomStream rs(seed, 11);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& e : v) {
    const double m = rs.uniform(margin, 2.0);
    e = rs.uniform() < 0.5 ? -m : m;
  }
  return v;
}

template <typename T>
std::vector<T> cast_vector(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// Garbage that a kernel must overwrite: NaN (any read-modify-write of it would leave NaN behind).
template <typename T>
std::vector<T> garbage(std::int64_t n) {
  return std::vector<T>(std::size_t(n), std::numeric_limits<T>::quiet_NaN());
}
template <typename T>
std::vector<T> guarded_garbage(std::int64_t n) {
  std::vector<T> v = garbage<T>(n);
  v.resize(std::size_t(n + kGuard), T(kGuardValue));
  return v;
}

inline double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::fabs(e));
  return m;
}

// Expects |got - want| <= atol + rtol * |want| elementwise (and no NaN); reports the first failure only.
template <typename T>
::testing::AssertionResult all_close(const std::vector<T>& got, const std::vector<double>& want, double rtol,
                                     double atol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), w = want[i];
    if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w)))
      return ::testing::AssertionFailure() << "element " << i << ": got " << g << ", want " << w << " (diff "
                                           << std::fabs(g - w) << ", rtol " << rtol << ", atol " << atol << ")";
  }
  return ::testing::AssertionSuccess();
}

// Float comparison against a double reference: rtol 1e-4 with an absolute floor relative to the output's
// scale (sums of signed terms can cancel to near 0, where a relative bound alone is meaningless).
template <typename T>
::testing::AssertionResult close_to_reference(const std::vector<T>& got, const std::vector<double>& want) {
  if constexpr (std::is_same_v<T, double>) return all_close(got, want, 1e-12, 1e-12 * (1.0 + max_abs(want)));
  return all_close(got, want, 1e-4, 1e-5 * (1.0 + max_abs(want)));
}

// Naive direct convolution in double: the definition, seven loops, bounds checked per tap.
inline std::vector<double> ref_conv2d_forward(const Conv2dShape& s, const std::vector<double>& x,
                                              const std::vector<double>& w, const std::vector<double>* bias) {
  std::vector<double> y(std::size_t(s.output_numel()));
  const std::int64_t cig = s.c_in / s.groups, cog = s.c_out / s.groups;
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t co = 0; co < s.c_out; ++co)
      for (std::int64_t oh = 0; oh < s.out_h; ++oh)
        for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
          double acc = bias ? (*bias)[std::size_t(co)] : 0.0;
          const std::int64_t g = co / cog;
          for (std::int64_t ci = 0; ci < cig; ++ci)
            for (std::int64_t i = 0; i < s.kh; ++i)
              for (std::int64_t j = 0; j < s.kw; ++j) {
                const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
                const std::int64_t iw = ow * s.stride_w - s.pad_left + j * s.dilation_w;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                acc += w[std::size_t(((co * cig + ci) * s.kh + i) * s.kw + j)] *
                       x[std::size_t(((n * s.c_in + g * cig + ci) * s.h + ih) * s.w + iw)];
              }
          y[std::size_t(((n * s.c_out + co) * s.out_h + oh) * s.out_w + ow)] = acc;
        }
  return y;
}

// Naive backward passes in double (the adjoints of ref_conv2d_forward, loop by loop).
inline void ref_conv2d_backward(const Conv2dShape& s, const std::vector<double>& x, const std::vector<double>& w,
                                const std::vector<double>& dy, std::vector<double>& dx, std::vector<double>& dw,
                                std::vector<double>& db) {
  dx.assign(std::size_t(s.input_numel()), 0.0);
  dw.assign(std::size_t(s.weight_numel()), 0.0);
  db.assign(std::size_t(s.c_out), 0.0);
  const std::int64_t cig = s.c_in / s.groups, cog = s.c_out / s.groups;
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t co = 0; co < s.c_out; ++co)
      for (std::int64_t oh = 0; oh < s.out_h; ++oh)
        for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
          const double g = dy[std::size_t(((n * s.c_out + co) * s.out_h + oh) * s.out_w + ow)];
          db[std::size_t(co)] += g;
          const std::int64_t grp = co / cog;
          for (std::int64_t ci = 0; ci < cig; ++ci)
            for (std::int64_t i = 0; i < s.kh; ++i)
              for (std::int64_t j = 0; j < s.kw; ++j) {
                const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
                const std::int64_t iw = ow * s.stride_w - s.pad_left + j * s.dilation_w;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                const std::size_t wi = std::size_t(((co * cig + ci) * s.kh + i) * s.kw + j);
                const std::size_t xi = std::size_t(((n * s.c_in + grp * cig + ci) * s.h + ih) * s.w + iw);
                dx[xi] += w[wi] * g;
                dw[wi] += x[xi] * g;
              }
        }
}

// Central differences of a scalar function of `param` (perturbed in place and restored) compared with the
// analytic gradient: |num - ana| <= atol + rtol * |num| for every element. float64 only.
inline ::testing::AssertionResult gradcheck(std::vector<double>& param, const std::vector<double>& analytic,
                                            const std::function<double()>& loss, const std::string& what,
                                            double step = 1e-6, double rtol = 1e-6, double atol = 1e-8) {
  if (param.size() != analytic.size())
    return ::testing::AssertionFailure() << what << ": analytic gradient has " << analytic.size()
                                         << " elements, parameter " << param.size();
  for (std::size_t i = 0; i < param.size(); ++i) {
    const double keep = param[i];
    param[i] = keep + step;
    const double lp = loss();
    param[i] = keep - step;
    const double lm = loss();
    param[i] = keep;
    const double num = (lp - lm) / (2 * step);
    if (!(std::fabs(num - analytic[i]) <= atol + rtol * std::fabs(num)))
      return ::testing::AssertionFailure() << what << "[" << i << "]: analytic " << analytic[i] << ", numeric " << num
                                           << " (diff " << std::fabs(num - analytic[i]) << ")";
  }
  return ::testing::AssertionSuccess();
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Expects `f` to throw arclight::Error whose message contains every fragment.
template <typename F>
::testing::AssertionResult throws_with(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
  } catch (const arclight::Error& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments)
      if (msg.find(frag) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << frag << "\"";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-arclight exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace arclight::test
