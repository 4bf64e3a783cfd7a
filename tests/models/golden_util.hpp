// Shared by the golden and slow model tests: opening a tests/golden/gen_models.py file ("model.<key>" weights,
// "golden.<name>" references), loading its weights into a model (strict), and the comparison rule:
// |ours − ref| <= rtol · max|ref| element-wise (a relative error of the tensor, so logits near zero do not
// demand impossible digits), with the worst element reported.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "arclight/io/safetensors.hpp"
#include "arclight/models/state_dict.hpp"

namespace arclight::testing {

class ModelGolden {
 public:
  explicit ModelGolden(const std::string& path) : file_(io::SafetensorsFile::open(path)) {}
  static std::string data_path(const std::string& stem) {
    return std::string(ARCLIGHT_SOURCE_DIR) + "/tests/golden/data/" + stem + ".safetensors";
  }
  // golden.<name> converted to dtype.
  Tensor get(const std::string& name, DType dtype) const {
    const io::TensorBytes& tb = file_.at("golden." + name);
    Tensor t = empty(Shape(tb.shape.begin(), tb.shape.end()), tb.dtype);
    std::memcpy(t.raw_data(), tb.data.data(), tb.data.size());
    return ops::to(t, dtype);
  }
  // Loads the model.* tensors (key_map applied after stripping "model."); strict: every key must match.
  models::LoadResult load_into(nn::Module& m, const models::KeyMap& inner = {}) const {
    models::LoadOptions lo;
    lo.key_map = [inner](const std::string& k) -> std::optional<std::string> {
      if (k.rfind("model.", 0) != 0) return std::nullopt;
      const std::string key = k.substr(6);
      return inner ? inner(key) : std::optional<std::string>(key);
    };
    return models::load_state_dict(m, file_, lo);
  }
  const io::SafetensorsFile& file() const { return file_; }

 private:
  io::SafetensorsFile file_;
};

inline ::testing::AssertionResult close_to_max(const Tensor& ours, const Tensor& ref, double rtol) {
  if (ours.shape() != ref.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(ours.shape()) << " vs " << shape_str(ref.shape());
  const auto a = ours.to_vector<double>(), b = ref.to_vector<double>();
  double mx = 0, worst = 0;
  std::size_t at = 0;
  for (double v : b) mx = std::max(mx, std::abs(v));
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(a[i] - b[i]);
    if (!(d <= worst)) {  // also catches NaN
      worst = std::isnan(d) ? INFINITY : d;
      at = i;
    }
  }
  if (mx > 0 && worst <= rtol * mx) return ::testing::AssertionSuccess() << "max error / max|ref| = " << worst / mx;
  return ::testing::AssertionFailure() << "max |ours − ref| = " << worst << " at element " << at << " (" << a[at]
                                       << " vs " << b[at] << "), max|ref| = " << mx << ", allowed " << rtol * mx;
}

}  // namespace arclight::testing
