// The decoded-image type of the data pipeline: an 8-bit HWC (interleaved) pixel buffer with its height,
// width and channel count (1 = grey, 3 = RGB). Decoders produce it, augmentations transform it, and the
// loader converts it to CHW float at the very end. Sizes are validated with checked arithmetic so a
// corrupt header can never produce a buffer smaller than the loops that walk it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "arclight/core/error.hpp"

namespace arclight::data {

// Multiplies non-negative sizes, throwing arclight::Error (naming `where`) instead of wrapping around.
inline std::size_t checked_mul(std::size_t a, std::size_t b, const char* where) {
  std::size_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) fail(where, "size overflow: ", a, " * ", b, " does not fit in size_t");
  return r;
}

struct Image {
  int height = 0;
  int width = 0;
  int channels = 0;
  std::vector<std::uint8_t> pixels;  // row-major HWC, size == height * width * channels

  Image() = default;
  // requires: height, width >= 0; channels in {1, 3, 4}. ensures: pixels sized and set to `fill`.
  Image(int h, int w, int c, std::uint8_t fill = 0) : height(h), width(w), channels(c) {
    ARCLIGHT_CHECK(h >= 0 && w >= 0, "Image", "negative size ", h, "x", w);
    ARCLIGHT_CHECK(c == 1 || c == 3 || c == 4, "Image", "channels = ", c, ", expected 1, 3 or 4");
    pixels.assign(checked_mul(checked_mul(static_cast<std::size_t>(h), static_cast<std::size_t>(w), "Image"),
                              static_cast<std::size_t>(c), "Image"),
                  fill);
  }

  bool empty() const { return pixels.empty(); }
  std::size_t size_bytes() const { return pixels.size(); }
  std::size_t row_stride() const { return static_cast<std::size_t>(width) * static_cast<std::size_t>(channels); }
  std::uint8_t* data() { return pixels.data(); }
  const std::uint8_t* data() const { return pixels.data(); }
  std::uint8_t& at(int y, int x, int c) {
    return pixels[(static_cast<std::size_t>(y) * width + x) * channels + c];
  }
  std::uint8_t at(int y, int x, int c) const {
    return pixels[(static_cast<std::size_t>(y) * width + x) * channels + c];
  }
  bool operator==(const Image& o) const {
    return height == o.height && width == o.width && channels == o.channels && pixels == o.pixels;
  }
};

}  // namespace arclight::data
