// Deterministic image operations on 8-bit HWC images, the building blocks of the augmentations:
// horizontal flip, affine warp (OpenCV warpAffine conventions), resize (bilinear / area / nearest, OpenCV
// cv2.resize conventions), crop, pad, rectangle fill, grey -> RGB, and the final HWC uint8 -> CHW float
// conversion with normalisation. Coordinates follow OpenCV: pixel (x, y) has its centre at integer (x, y),
// and an affine matrix maps source points to destination points. Results are rounded to nearest and
// saturated to [0, 255]. No randomness here: transforms.hpp draws the parameters.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/data/image.hpp"

namespace arclight::data {

enum class Interpolation { nearest, linear, area, automatic };  // automatic: area to shrink, linear otherwise
enum class BorderMode { constant, reflect101 };                 // reflect101 = OpenCV BORDER_REFLECT_101

namespace detail {
inline std::uint8_t saturate_u8(double v) {
  // Round half away from zero on the non-negative range, then clamp.
  if (!(v > 0.0)) return 0;  // also maps NaN to 0
  if (v >= 254.5) return 255;
  return static_cast<std::uint8_t>(v + 0.5);
}
inline std::uint8_t saturate_u8f(float v) {
  if (!(v > 0.0f)) return 0;
  if (v >= 254.5f) return 255;
  return static_cast<std::uint8_t>(v + 0.5f);
}
// Index of `i` reflected into [0, n) without repeating the edge (gfedcb|abcdefgh|gfedcba).
inline int reflect101(int i, int n) {
  if (n == 1) return 0;
  const int period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}
inline void check_image(const Image& img, const char* where) {
  ARCLIGHT_CHECK(img.height > 0 && img.width > 0, where, "empty image ", img.height, "x", img.width);
  ARCLIGHT_CHECK(img.pixels.size() == img.row_stride() * static_cast<std::size_t>(img.height), where,
                 "pixel buffer holds ", img.pixels.size(), " bytes, expected ", img.height, "x", img.width, "x",
                 img.channels);
}
}  // namespace detail

// Mirrors columns in place (cv2.flip(img, 1)). requires: a valid image.
inline void hflip_inplace(Image& img) {
  detail::check_image(img, "hflip");
  const int c = img.channels;
  for (int y = 0; y < img.height; ++y) {
    std::uint8_t* row = img.data() + static_cast<std::size_t>(y) * img.row_stride();
    for (int l = 0, r = img.width - 1; l < r; ++l, --r)
      for (int k = 0; k < c; ++k) std::swap(row[l * c + k], row[r * c + k]);
  }
}

// A 2x3 affine matrix [a b c; d e f] mapping a source point (x, y) to (a x + b y + c, d x + e y + f).
using Affine = std::array<double, 6>;

// cv2.getRotationMatrix2D: rotation by `angle_deg` (counter-clockwise on screen, y pointing down) and
// isotropic `scale` about (cx, cy).
inline Affine rotation_matrix(double cx, double cy, double angle_deg, double scale) {
  const double rad = angle_deg * 3.14159265358979323846 / 180.0;
  const double a = scale * std::cos(rad), b = scale * std::sin(rad);
  return {a, b, (1 - a) * cx - b * cy, -b, a, b * cx + (1 - a) * cy};
}

inline Affine invert_affine(const Affine& m) {
  const double det = m[0] * m[4] - m[1] * m[3];
  ARCLIGHT_CHECK(std::isfinite(det) && std::abs(det) > 1e-12, "invert_affine", "singular matrix (det ", det, ")");
  const double ia = m[4] / det, ib = -m[1] / det, id = -m[3] / det, ie = m[0] / det;
  return {ia, ib, -(ia * m[2] + ib * m[5]), id, ie, -(id * m[2] + ie * m[5])};
}

// cv2.warpAffine(src, m, (out_w, out_h), flags=interp, borderMode=border, borderValue=value): each output
// pixel samples the source at m^-1 (x, y); taps that fall outside read the border (a constant `value`, or
// the reflect-101 mirror). The arithmetic is OpenCV's fixed point, so results match cv2 to the bit in
// ordinary cases: source coordinates in 1/1024 pixel (AB_BITS = 10), rounded to 1/32 pixel
// (INTER_BITS = 5) for the bilinear weights, weights in 1/32768 (INTER_REMAP_COEF_BITS = 15) and
// round-to-nearest at the end. requires: interp is nearest or linear. ensures: a new out_h x out_w image.
inline Image warp_affine(const Image& src, const Affine& m, int out_h, int out_w, Interpolation interp,
                         BorderMode border, std::uint8_t value = 0) {
  detail::check_image(src, "warp_affine");
  ARCLIGHT_CHECK(out_h > 0 && out_w > 0, "warp_affine", "output size ", out_h, "x", out_w, ", expected positive");
  ARCLIGHT_CHECK(interp == Interpolation::nearest || interp == Interpolation::linear, "warp_affine",
                 "interpolation must be nearest or linear");
  const Affine inv = invert_affine(m);
  for (double v : inv) ARCLIGHT_CHECK(std::isfinite(v), "warp_affine", "non-finite matrix");
  constexpr int kAbBits = 10, kInterBits = 5, kCoefBits = 15;
  constexpr double kAbScale = 1 << kAbBits;
  constexpr std::int64_t kFar = std::int64_t{1} << 40;  // beyond: saturate (every tap is outside)
  const bool linear = interp == Interpolation::linear;
  const std::int64_t round_delta = linear ? (1 << (kAbBits - kInterBits - 1)) : (1 << (kAbBits - 1));
  auto fixed = [&](double v) {  // cv::saturate_cast<int>(v * AB_SCALE), in 64 bits, clamped far out
    const double f = std::nearbyint(v * kAbScale);
    return static_cast<std::int64_t>(std::clamp(f, -static_cast<double>(kFar), static_cast<double>(kFar)));
  };
  const int W = src.width, H = src.height, C = src.channels;
  std::vector<std::int64_t> adelta(static_cast<std::size_t>(out_w)), bdelta(static_cast<std::size_t>(out_w));
  for (int x = 0; x < out_w; ++x) {
    adelta[x] = fixed(inv[0] * x);
    bdelta[x] = fixed(inv[3] * x);
  }
  Image dst(out_h, out_w, C);
  const std::uint8_t* const sp = src.data();
  auto fetch = [&](std::int64_t x, std::int64_t y, int k) -> int {
    if (x < 0 || x >= W || y < 0 || y >= H) {
      if (border == BorderMode::constant) return value;
      x = detail::reflect101(static_cast<int>(std::clamp<std::int64_t>(x, -(1 << 30), 1 << 30)), W);
      y = detail::reflect101(static_cast<int>(std::clamp<std::int64_t>(y, -(1 << 30), 1 << 30)), H);
    }
    return sp[(static_cast<std::size_t>(y) * W + static_cast<std::size_t>(x)) * C + k];
  };
  // The pixel loop, specialised on the channel count (CC = 0: runtime C).
  auto run = [&](auto channels_tag) {
    constexpr int CC = decltype(channels_tag)::value;
    const int NC = CC ? CC : C;
    const int w = W, h = H, ow = out_w;
    std::uint8_t* const dp = dst.data();
    for (int y = 0; y < out_h; ++y) {
      std::uint8_t* drow = dp + static_cast<std::size_t>(y) * ow * NC;
      const std::int64_t X0 = fixed(inv[1] * y + inv[2]) + round_delta;
      const std::int64_t Y0 = fixed(inv[4] * y + inv[5]) + round_delta;
      for (int x = 0; x < ow; ++x) {
        std::uint8_t* d = drow + static_cast<std::size_t>(x) * NC;
        if (!linear) {
          const std::int64_t ix = (X0 + adelta[x]) >> kAbBits, iy = (Y0 + bdelta[x]) >> kAbBits;
          for (int k = 0; k < NC; ++k) d[k] = static_cast<std::uint8_t>(fetch(ix, iy, k));
          continue;
        }
        const std::int64_t X = (X0 + adelta[x]) >> (kAbBits - kInterBits);
        const std::int64_t Y = (Y0 + bdelta[x]) >> (kAbBits - kInterBits);
        const std::int64_t x0 = X >> kInterBits, y0 = Y >> kInterBits;
        const int fx = static_cast<int>(X & 31), fy = static_cast<int>(Y & 31);
        // Bilinear weights in 1/32768: (32 - f) and f in 1/32 per axis, times 32.
        const int w00 = (32 - fx) * (32 - fy) * 32, w01 = fx * (32 - fy) * 32;
        const int w10 = (32 - fx) * fy * 32, w11 = fx * fy * 32;
        if (x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h) {  // fast path: all four taps inside
          const std::uint8_t* p00 = sp + (static_cast<std::size_t>(y0) * w + static_cast<std::size_t>(x0)) * NC;
          const std::uint8_t* p10 = p00 + static_cast<std::size_t>(w) * NC;
          for (int k = 0; k < NC; ++k) {
            const int acc = p00[k] * w00 + p00[NC + k] * w01 + p10[k] * w10 + p10[NC + k] * w11;
            d[k] = static_cast<std::uint8_t>((acc + (1 << (kCoefBits - 1))) >> kCoefBits);
          }
        } else if (border == BorderMode::constant && (x0 + 1 < 0 || y0 + 1 < 0 || x0 >= w || y0 >= h)) {
          for (int k = 0; k < NC; ++k) d[k] = value;  // every tap outside
        } else {
          for (int k = 0; k < NC; ++k) {
            const int acc = fetch(x0, y0, k) * w00 + fetch(x0 + 1, y0, k) * w01 + fetch(x0, y0 + 1, k) * w10 +
                            fetch(x0 + 1, y0 + 1, k) * w11;
            d[k] = static_cast<std::uint8_t>((acc + (1 << (kCoefBits - 1))) >> kCoefBits);
          }
        }
      }
    }
  };
  if (C == 3) run(std::integral_constant<int, 3>{});
  else if (C == 1) run(std::integral_constant<int, 1>{});
  else run(std::integral_constant<int, 0>{});
  return dst;
}

namespace detail {
// One output sample of a separable resampling filter: source taps [first, first + weights.size()).
struct ResampleTaps {
  int first = 0;
  std::vector<float> weights;
};

// cv2 INTER_LINEAR along one axis: src = (dst + 0.5) * in/out - 0.5, edge taps clamped.
inline std::vector<ResampleTaps> linear_taps(int in, int out) {
  std::vector<ResampleTaps> taps(static_cast<std::size_t>(out));
  const double scale = static_cast<double>(in) / out;
  for (int o = 0; o < out; ++o) {
    double f = (o + 0.5) * scale - 0.5;
    int i0 = static_cast<int>(std::floor(f));
    double a = f - i0;
    if (i0 < 0) i0 = 0, a = 0;
    if (i0 >= in - 1) i0 = in - 1, a = 0;
    taps[o].first = i0;
    if (a == 0) taps[o].weights = {1.0f};
    else taps[o].weights = {static_cast<float>(1 - a), static_cast<float>(a)};
  }
  return taps;
}

// cv2 INTER_AREA for shrinking along one axis: output o averages the source interval
// [o * in/out, (o + 1) * in/out), each source pixel weighted by its overlap.
inline std::vector<ResampleTaps> area_taps(int in, int out) {
  std::vector<ResampleTaps> taps(static_cast<std::size_t>(out));
  const double scale = static_cast<double>(in) / out;
  for (int o = 0; o < out; ++o) {
    const double lo = o * scale, hi = std::min<double>((o + 1) * scale, in);
    const int i0 = static_cast<int>(std::floor(lo));
    const int i1 = std::min(in, static_cast<int>(std::ceil(hi - 1e-9)));
    taps[o].first = i0;
    for (int i = i0; i < i1; ++i) {
      const double ov = std::min<double>(i + 1, hi) - std::max<double>(i, lo);
      taps[o].weights.push_back(static_cast<float>(std::max(0.0, ov) / (hi - lo)));
    }
  }
  return taps;
}

// cv2 INTER_NEAREST along one axis: src = floor(dst * in / out).
inline std::vector<ResampleTaps> nearest_taps(int in, int out) {
  std::vector<ResampleTaps> taps(static_cast<std::size_t>(out));
  for (int o = 0; o < out; ++o) {
    taps[o].first = std::min(in - 1, static_cast<int>(std::floor(o * (static_cast<double>(in) / out))));
    taps[o].weights = {1.0f};
  }
  return taps;
}
}  // namespace detail

// cv2.resize to out_h x out_w. Interpolation::automatic uses area when neither side grows (and one
// shrinks), linear otherwise; area on a growing side falls back to linear (as OpenCV does, nearly).
// ensures: a new image with the source's channel count.
inline Image resize(const Image& src, int out_h, int out_w, Interpolation interp = Interpolation::automatic) {
  detail::check_image(src, "resize");
  ARCLIGHT_CHECK(out_h > 0 && out_w > 0 && out_h <= 65536 && out_w <= 65536, "resize", "output size ", out_h, "x",
                 out_w, ", expected 1..65536 per side");
  if (out_h == src.height && out_w == src.width) return src;
  if (interp == Interpolation::automatic)
    interp = (out_h <= src.height && out_w <= src.width) ? Interpolation::area : Interpolation::linear;
  auto taps_for = [&](int in, int out) {
    if (interp == Interpolation::nearest) return detail::nearest_taps(in, out);
    if (interp == Interpolation::area && out < in) return detail::area_taps(in, out);
    return detail::linear_taps(in, out);
  };
  const auto tx = taps_for(src.width, out_w);
  const auto ty = taps_for(src.height, out_h);
  const int C = src.channels;
  // Horizontal pass into float rows, then vertical pass with rounding.
  std::vector<float> tmp(static_cast<std::size_t>(src.height) * out_w * C);
  for (int y = 0; y < src.height; ++y) {
    const std::uint8_t* srow = src.data() + static_cast<std::size_t>(y) * src.row_stride();
    float* trow = tmp.data() + static_cast<std::size_t>(y) * out_w * C;
    for (int x = 0; x < out_w; ++x) {
      const auto& t = tx[x];
      for (int k = 0; k < C; ++k) {
        float acc = 0;
        for (std::size_t j = 0; j < t.weights.size(); ++j) acc += t.weights[j] * srow[(t.first + j) * C + k];
        trow[x * C + k] = acc;
      }
    }
  }
  Image dst(out_h, out_w, C);
  const std::size_t row = static_cast<std::size_t>(out_w) * C;
  std::vector<float> acc(row);
  for (int y = 0; y < out_h; ++y) {
    const auto& t = ty[y];
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (std::size_t j = 0; j < t.weights.size(); ++j) {
      const float* trow = tmp.data() + (t.first + j) * row;
      const float w = t.weights[j];
      for (std::size_t i = 0; i < row; ++i) acc[i] += w * trow[i];
    }
    std::uint8_t* drow = dst.data() + y * row;
    for (std::size_t i = 0; i < row; ++i) drow[i] = detail::saturate_u8f(acc[i]);
  }
  return dst;
}

// Copies the rectangle rows [y, y + h), columns [x, x + w). requires: the rectangle inside the image.
inline Image crop(const Image& src, int y, int x, int h, int w) {
  detail::check_image(src, "crop");
  ARCLIGHT_CHECK(h > 0 && w > 0 && y >= 0 && x >= 0 && y + h <= src.height && x + w <= src.width, "crop",
                 "rectangle y=", y, " x=", x, " h=", h, " w=", w, " is not inside the ", src.height, "x", src.width,
                 " image");
  Image dst(h, w, src.channels);
  const std::size_t len = static_cast<std::size_t>(w) * src.channels;
  for (int r = 0; r < h; ++r)
    std::copy_n(src.data() + static_cast<std::size_t>(y + r) * src.row_stride() + static_cast<std::size_t>(x) * src.channels,
                len, dst.data() + r * len);
  return dst;
}

// Sets every channel of rows [y1, y2), columns [x1, x2) to `value` in place; the rectangle is clipped
// to the image first (an empty rectangle is a no-op).
inline void fill_rect(Image& img, int x1, int y1, int x2, int y2, std::uint8_t value) {
  x1 = std::clamp(x1, 0, img.width), x2 = std::clamp(x2, 0, img.width);
  y1 = std::clamp(y1, 0, img.height), y2 = std::clamp(y2, 0, img.height);
  if (x2 <= x1 || y2 <= y1) return;
  for (int y = y1; y < y2; ++y)
    std::fill_n(img.data() + static_cast<std::size_t>(y) * img.row_stride() + static_cast<std::size_t>(x1) * img.channels,
                static_cast<std::size_t>(x2 - x1) * img.channels, value);
}

// albumentations PadIfNeeded: pads to at least min_h x min_w, the extra split evenly with the odd pixel
// at the bottom/right; the border is a constant or the reflect-101 mirror.
inline Image pad_if_needed(const Image& src, int min_h, int min_w, BorderMode border, std::uint8_t value = 0) {
  detail::check_image(src, "pad_if_needed");
  const int H = std::max(src.height, min_h), W = std::max(src.width, min_w);
  if (H == src.height && W == src.width) return src;
  const int top = (H - src.height) / 2, left = (W - src.width) / 2;
  Image dst(H, W, src.channels, value);
  const int C = src.channels;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      int sy = y - top, sx = x - left;
      const bool inside = sy >= 0 && sy < src.height && sx >= 0 && sx < src.width;
      if (!inside) {
        if (border == BorderMode::constant) continue;
        sy = detail::reflect101(sy, src.height);
        sx = detail::reflect101(sx, src.width);
      }
      std::copy_n(src.data() + (static_cast<std::size_t>(sy) * src.width + sx) * C, C,
                  dst.data() + (static_cast<std::size_t>(y) * W + x) * C);
    }
  return dst;
}

// Grey -> RGB by replication; a 3-channel image is returned unchanged.
inline Image grey_to_rgb(const Image& src) {
  detail::check_image(src, "grey_to_rgb");
  if (src.channels == 3) return src;
  ARCLIGHT_CHECK(src.channels == 1, "grey_to_rgb", "channels = ", src.channels, ", expected 1 or 3");
  Image dst(src.height, src.width, 3);
  for (std::size_t i = 0; i < src.pixels.size(); ++i)
    dst.pixels[3 * i] = dst.pixels[3 * i + 1] = dst.pixels[3 * i + 2] = src.pixels[i];
  return dst;
}

// albumentations Normalize + ToTensorV2: out[c][y][x] = (img[y][x][c] - mean[c] * max_pixel_value) /
// (std[c] * max_pixel_value), written in CHW order to `out`.
// requires: mean/std of size 1 (broadcast) or img.channels, std > 0; out holds C*H*W floats.
// ensures: exactly C*H*W floats written (not accumulated).
inline void to_chw_float(const Image& img, const std::vector<float>& mean, const std::vector<float>& std_dev,
                         float* out, float max_pixel_value = 255.0f) {
  detail::check_image(img, "to_chw_float");
  const int C = img.channels;
  ARCLIGHT_CHECK(mean.size() == 1 || mean.size() == static_cast<std::size_t>(C), "to_chw_float", "mean has ",
                 mean.size(), " values, expected 1 or ", C);
  ARCLIGHT_CHECK(std_dev.size() == mean.size(), "to_chw_float", "std has ", std_dev.size(), " values, mean has ",
                 mean.size());
  float scale[4], bias[4];
  for (int k = 0; k < C; ++k) {
    const float m = mean[mean.size() == 1 ? 0 : k], s = std_dev[std_dev.size() == 1 ? 0 : k];
    ARCLIGHT_CHECK(s > 0 && std::isfinite(s) && std::isfinite(m), "to_chw_float", "std[", k, "] = ", s,
                   ", mean = ", m, ", expected finite std > 0");
    scale[k] = 1.0f / (s * max_pixel_value);
    bias[k] = -m / s;
  }
  const std::size_t plane = static_cast<std::size_t>(img.height) * img.width;
  const std::uint8_t* p = img.data();
  for (int k = 0; k < C; ++k) {
    float* o = out + k * plane;
    const float sc = scale[k], bi = bias[k];
    for (std::size_t i = 0; i < plane; ++i) o[i] = static_cast<float>(p[i * C + k]) * sc + bi;
  }
}

}  // namespace arclight::data
