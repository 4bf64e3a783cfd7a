// Helpers shared by the CUDA-vs-CPU tests: the skip-without-GPU guard, fresh random inputs whose seed is
// printed on failure (ARCLIGHT_TEST_SEED replays one), device buffers pre-filled with NaN garbage, and an
// element-wise comparison that reports the worst element.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "arclight/cuda/runtime.hpp"

namespace arclight::testing::cuda {

// Skips the current test, with the reason, when no GPU can be used.
#define ARCLIGHT_REQUIRE_GPU()                                                                    \
  do {                                                                                            \
    if (!::arclight::cuda::available())                                                           \
      GTEST_SKIP() << "CUDA test skipped: " << ::arclight::cuda::availability().reason;           \
  } while (0)

// A fresh seed per call (ARCLIGHT_TEST_SEED fixes it), traced so a failure says how to replay it.
inline std::uint64_t fresh_seed() {
  if (const char* s = std::getenv("ARCLIGHT_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  static std::random_device rd;
  return (std::uint64_t(rd()) << 32) ^ rd();
}

#define ARCLIGHT_TRACE_SEED(seed) SCOPED_TRACE("replay with ARCLIGHT_TEST_SEED=" + std::to_string(seed))

inline std::vector<float> uniform(std::size_t n, std::mt19937_64& g, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

inline std::vector<float> normal(std::size_t n, std::mt19937_64& g, float stddev = 1.f) {
  std::normal_distribution<float> d(0.f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

inline std::vector<std::int64_t> labels(std::size_t n, std::int64_t classes, std::mt19937_64& g) {
  std::uniform_int_distribution<std::int64_t> d(0, classes - 1);
  std::vector<std::int64_t> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// An output buffer of `n` floats filled with 0xFF bytes (NaN), so an element the kernel forgets stays NaN.
inline ::arclight::cuda::DeviceBuffer<float> garbage(std::size_t n) {
  ::arclight::cuda::DeviceBuffer<float> b(n == 0 ? 1 : n);
  b.fill_bytes(0xFF);
  return b;
}

// |got − want| <= atol + rtol·|want| for every element (NaN only matches NaN), reporting the worst element.
template <typename A, typename B>
::testing::AssertionResult near_all(const std::vector<A>& got, const std::vector<B>& want, double rtol, double atol,
                                    const std::string& what = "") {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << what << ": sizes differ: " << got.size() << " vs " << want.size();
  std::size_t worst = 0;
  double worst_excess = -1.0;
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    if (std::isnan(g) && std::isnan(w)) continue;
    const double tol = atol + rtol * std::abs(w);
    const double excess = std::isnan(g) || std::isnan(w) ? INFINITY : std::abs(g - w) - tol;
    if (excess > 0) ++bad;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << got.size() << " elements differ; worst at "
                                       << worst << ": got " << double(got[worst]) << ", want " << double(want[worst])
                                       << " (rtol " << rtol << ", atol " << atol << ")";
}

inline double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

}  // namespace arclight::testing::cuda
