// Reading the committed golden files (tests/golden/data/*.safetensors, written by the tests/golden/gen_*.py
// scripts) and the comparison rule the golden tests share: |a − b| <= rtol·|b| + atol_rel·max|b| element-wise
// (atol_rel = 0: purely relative), with the first failing element reported.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "arclight/arclight.hpp"
#include "arclight/io/safetensors.hpp"

namespace arclight::testing {

class GoldenFile {
 public:
  // Opens tests/golden/data/<stem>.safetensors.
  explicit GoldenFile(const std::string& stem)
      : file_(io::SafetensorsFile::open(std::string(ARCLIGHT_SOURCE_DIR) + "/tests/golden/data/" + stem +
                                        ".safetensors")) {}

  bool has(const std::string& name) const { return file_.find(name) != nullptr; }
  // The stored tensor `name`, converted to `dtype` when given (a new contiguous tensor, not in any graph).
  Tensor get(const std::string& name, std::optional<DType> dtype = std::nullopt) const {
    const io::TensorBytes& tb = file_.at(name);
    Tensor t = empty(tb.shape, tb.dtype);
    EXPECT_EQ(std::size_t(t.numel()) * t.element_size(), tb.data.size()) << name;
    std::memcpy(t.raw_data(), tb.data.data(), tb.data.size());
    return dtype ? ops::to(t, *dtype).detach() : t;
  }
  // get() as a leaf that requires grad.
  Tensor leaf(const std::string& name, DType dtype) const {
    Tensor t = get(name, dtype);
    t.set_requires_grad(true);
    return t;
  }
  std::vector<std::int64_t> ints(const std::string& name) const { return get(name).to_vector<std::int64_t>(); }
  std::vector<double> doubles(const std::string& name) const { return get(name).to_vector<double>(); }

 private:
  io::SafetensorsFile file_;
};

// |a − b| <= rtol·|b| + atol_rel·max|b| element-wise.
inline ::testing::AssertionResult close(const Tensor& a, const Tensor& b, double rtol, double atol_rel = 0.0) {
  if (!a.defined()) return ::testing::AssertionFailure() << "no value (undefined tensor)";
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double mx = 0;
  for (double v : vb) mx = std::max(mx, std::abs(v));
  for (std::size_t i = 0; i < va.size(); ++i) {
    const double tol = rtol * std::abs(vb[i]) + atol_rel * mx;
    if (!(std::abs(va[i] - vb[i]) <= tol))
      return ::testing::AssertionFailure() << "element " << i << ": " << va[i] << " vs reference " << vb[i]
                                           << " (tolerance " << tol << ")";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace arclight::testing
