// Shared helpers of the retrieval-head kernel tests (tests/kernels/): seeded random fills, a float64
// central-difference gradient check, tolerant comparisons and an "expect this arclight::Error" matcher.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/core/rng.hpp"

namespace arclight::test {

inline std::vector<double> random_vector(size_t n, double lo, double hi, uint64_t seed, uint64_t stream = 0) {
  RandomStream rs(seed, stream);
  std::vector<double> v(n);
  for (auto& x : v) x = rs.uniform(lo, hi);
  return v;
}

inline std::vector<int64_t> random_labels(size_t n, int64_t classes, uint64_t seed) {
  RandomStream rs(seed, 7);
  std::vector<int64_t> v(n);
  for (auto& x : v) x = rs.randint(0, classes - 1);
  return v;
}

template <typename T>
std::vector<T> cast_vector(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// Garbage that a kernel must overwrite.
template <typename T>
std::vector<T> garbage(size_t n) {
  return std::vector<T>(n, std::numeric_limits<T>::quiet_NaN());
}

// |a − b| <= atol + rtol·max(|a|, |b|), element-wise, with the index in the failure message.
template <typename A, typename B>
void expect_all_close(const std::vector<A>& a, const std::vector<B>& b, double rtol, double atol,
                      const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = double(a[i]), y = double(b[i]);
    ASSERT_TRUE(std::isfinite(x) && std::isfinite(y)) << what << " [" << i << "]: " << x << " vs " << y;
    EXPECT_LE(std::abs(x - y), atol + rtol * std::max(std::abs(x), std::abs(y)))
        << what << " [" << i << "]: " << x << " vs " << y;
  }
}

// Central differences of f with respect to every entry of x (which f reads), compared with `analytic`.
// f must be smooth at x (tests keep inputs away from kinks by more than h).
inline void expect_gradient(const std::function<double()>& f, std::vector<double>& x,
                            const std::vector<double>& analytic, const std::string& what, double h = 1e-6,
                            double rtol = 1e-6, double atol = 1e-8) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  double max_abs = 0.0;
  for (double g : analytic) max_abs = std::max(max_abs, std::abs(g));
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double fp = f();
    x[i] = keep - h;
    const double fm = f();
    x[i] = keep;
    const double numeric = (fp - fm) / (2.0 * h);
    ASSERT_TRUE(std::isfinite(analytic[i])) << what << " [" << i << "]";
    EXPECT_LE(std::abs(numeric - analytic[i]), atol * std::max(1.0, max_abs) + rtol * std::abs(numeric))
        << what << " [" << i << "]: numeric " << numeric << " analytic " << analytic[i];
  }
}

// Runs fn, expects arclight::Error whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message '" << msg << "' lacks '" << p << "'";
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected arclight::Error, got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "expected arclight::Error, nothing was thrown";
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace arclight::test
