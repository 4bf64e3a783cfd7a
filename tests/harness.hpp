// The shared test harness: input factories (contiguous and deliberately non-contiguous leaves, positive
// domains), a gradcheck assertion that prints the worst element, and float comparisons with a tolerance
// report. Every op test in tests/ uses these so checks read the same everywhere.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "arclight/arclight.hpp"

namespace arclight::testing {

using arclight::Tensor;

// A leaf of `shape` whose memory is laid out transposed in its last two dims (or with stride 2 for 1-D),
// so ops see genuinely non-contiguous input.
inline Tensor noncontiguous(const Tensor& values) {
  NoGradGuard ng;
  Tensor v = values;
  if (v.dim() >= 2) {
    Tensor base = ops::contiguous(ops::transpose(v, -1, -2));  // memory in swapped order
    return ops::transpose(base, -1, -2).detach();
  }
  if (v.dim() == 1) {
    Tensor base = zeros({v.shape()[0] * 2}, v.dtype());
    Tensor view = ops::slice(base, 0, 0, v.shape()[0] * 2, 2);
    ops::copy_(view, v);
    return view.detach();
  }
  return v;
}

// Random f64 leaves: normal, or uniform in [lo, hi] when lo < hi.
inline Tensor leaf(const Shape& shape, std::uint64_t seed, bool contiguous = true, double lo = 0, double hi = 0) {
  Generator gen(seed);
  Tensor v = lo < hi ? rand(shape, DType::f64, gen, lo, hi) : randn(shape, DType::f64, gen);
  Tensor t = contiguous ? v : noncontiguous(v);
  t.set_requires_grad(true);
  return t;
}

// Asserts that gradcheck passes, printing the worst element otherwise.
#define EXPECT_GRADCHECK(fn, inputs)                                  \
  do {                                                                \
    auto _res = ::arclight::gradcheck(fn, inputs);                    \
    EXPECT_TRUE(_res.ok) << _res.message;                             \
  } while (0)

// Asserts two tensors have equal shapes and elementwise |a − b| ≤ atol + rtol·|b|.
inline ::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-6) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (std::size_t i = 0; i < va.size(); ++i) {
    const double tol = atol + rtol * std::abs(vb[i]);
    if (!(std::abs(va[i] - vb[i]) <= tol) && !(std::isnan(va[i]) && std::isnan(vb[i])))
      return ::testing::AssertionFailure() << "element " << i << ": " << va[i] << " vs " << vb[i] << " (tolerance " << tol
                                           << ")";
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult all_close(const Tensor& a, const std::vector<double>& expected, double rtol = 1e-5,
                                            double atol = 1e-6) {
  return all_close(a, from_vector(expected, a.shape(), DType::f64), rtol, atol);
}

// Expects `stmt` to throw arclight::Error whose message contains every fragment.
#define EXPECT_ERROR_WITH(stmt, ...)                                                         \
  do {                                                                                       \
    try {                                                                                    \
      stmt;                                                                                  \
      ADD_FAILURE() << "expected arclight::Error from: " #stmt;                              \
    } catch (const ::arclight::Error& _e) {                                                  \
      for (const std::string& _frag : std::vector<std::string>{__VA_ARGS__})                 \
        EXPECT_NE(std::string(_e.what()).find(_frag), std::string::npos)                     \
            << "message \"" << _e.what() << "\" lacks \"" << _frag << "\"";                  \
    }                                                                                        \
  } while (0)

}  // namespace arclight::testing
