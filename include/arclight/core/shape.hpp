// Shapes and strides: small helpers shared by Tensor and the ops (element counts, contiguous strides,
// NumPy broadcasting, dim normalisation, printing). Strides are in elements, not bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "arclight/core/error.hpp"

namespace arclight {

using Shape = std::vector<std::int64_t>;
using Strides = std::vector<std::int64_t>;

inline std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

// Product of the sizes; throws on negative sizes or overflow past 2^62 elements.
inline std::int64_t shape_numel(const Shape& s, const char* where = "shape") {
  std::int64_t n = 1;
  for (auto d : s) {
    ARCLIGHT_CHECK(d >= 0, where, "negative size in shape ", shape_str(s));
    if (d != 0 && n > (std::int64_t{1} << 62) / d) fail(where, "shape ", shape_str(s), " has too many elements");
    n *= d;
  }
  return n;
}

inline Strides contiguous_strides(const Shape& s) {
  Strides st(s.size());
  std::int64_t acc = 1;
  for (std::size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i] > 0 ? s[i] : 1;
  }
  return st;
}

// Maps a possibly negative dim into [0, ndim); throws naming the op otherwise.
inline int normalize_dim(std::int64_t dim, std::int64_t ndim, const char* op) {
  const std::int64_t lo = -(ndim > 0 ? ndim : 1), hi = (ndim > 0 ? ndim : 1) - 1;
  ARCLIGHT_CHECK(dim >= lo && dim <= hi, op, "dim ", dim, " out of range for a tensor of rank ", ndim,
                 " (expected a dim in [", lo, ", ", hi, "])");
  return static_cast<int>(dim < 0 ? dim + (ndim > 0 ? ndim : 1) : dim);
}

// NumPy broadcasting of two shapes; throws with both shapes when they are incompatible.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const std::size_t n = a.size() > b.size() ? a.size() : b.size();
  Shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const std::int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      fail(op, "shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast (dim ", i, ": ", da, " vs ", db,
           "; expected equal sizes or 1)");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace arclight
