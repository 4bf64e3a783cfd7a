// CPU kernels of 2-D pooling over NCHW planes, PyTorch semantics, forward and backward:
//   * average pooling: kernel, stride, symmetric padding, ceil_mode and count_include_pad exactly as
//     torch.nn.AvgPool2d (windows are clipped to input + pad for the "include pad" divisor, and to the input
//     for the other). NFNet's transition shortcut is avg_pool2d with k = 2, stride 2, ceil_mode = true,
//     count_include_pad = false (timm's DownsampleAvg);
//   * max pooling with the argmax saved as the flat index ih * w + iw inside the plane (torch's
//     return_indices layout), NaN propagating like torch; the backward scatters through those indices;
//   * global average pooling [n, c, h*w] -> [n, c].
// Parallel over (image, channel) planes with OpenMP, so the scatters of the backward passes are race-free.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "arclight/core/error.hpp"
#include "kernels/common/conv_shape.hpp"

namespace arclight::kernels::cpu {

using kernels::Pool2dShape;

// Validates a Pool2dShape. Ensures (or throws "<op>: ...") positive sizes, kernel and stride >= 1,
// 0 <= pad <= kernel / 2 (torch's rule, so every window holds at least one input element) and an output of
// at least 1x1.
inline void check_pool2d_shape(const Pool2dShape& s, const char* op = "pool2d") {
  ARCLIGHT_CHECK(s.n >= 1 && s.c >= 1 && s.h >= 1 && s.w >= 1, op, "input sizes must be positive, got [", s.n, ", ",
                 s.c, ", ", s.h, ", ", s.w, "]");
  ARCLIGHT_CHECK(s.kh >= 1 && s.kw >= 1, op, "kernel size must be >= 1, got (", s.kh, ", ", s.kw, ")");
  ARCLIGHT_CHECK(s.stride_h >= 1 && s.stride_w >= 1, op, "stride must be >= 1, got (", s.stride_h, ", ", s.stride_w,
                 ")");
  ARCLIGHT_CHECK(s.pad_h >= 0 && s.pad_w >= 0 && 2 * s.pad_h <= s.kh && 2 * s.pad_w <= s.kw, op,
                 "padding must be between 0 and half the kernel size, got pad (", s.pad_h, ", ", s.pad_w,
                 ") for kernel (", s.kh, ", ", s.kw, ")");
  ARCLIGHT_CHECK(s.out_h >= 1 && s.out_w >= 1, op, "output size must be positive, got ", s.out_h, "x", s.out_w,
                 " for input ", s.h, "x", s.w, ", kernel (", s.kh, ", ", s.kw, "), stride (", s.stride_h, ", ",
                 s.stride_w, "), pad (", s.pad_h, ", ", s.pad_w, ")");
}

// Builds and validates a pooling shape from input dims [N, C, H, W] (stride <= 0 means "= kernel").
inline Pool2dShape make_pool2d_shape(std::span<const std::int64_t> input_dims, std::int64_t kh, std::int64_t kw,
                                     std::int64_t stride_h, std::int64_t stride_w, std::int64_t pad_h,
                                     std::int64_t pad_w, bool ceil_mode, const char* op = "pool2d") {
  ARCLIGHT_CHECK(input_dims.size() == 4, op, "input must have rank 4 [N, C, H, W], got rank ", input_dims.size());
  const Pool2dShape s = kernels::pool2d_shape(input_dims[0], input_dims[1], input_dims[2], input_dims[3], kh, kw,
                                              stride_h, stride_w, pad_h, pad_w, ceil_mode);
  check_pool2d_shape(s, op);
  return s;
}

namespace detail {
// The window of output (oh, ow) clipped to the input, and torch's divisor.
struct AvgWindow {
  std::int64_t h0, h1, w0, w1;
  std::int64_t divisor;
};
inline AvgWindow avg_window(const Pool2dShape& s, std::int64_t oh, std::int64_t ow, bool count_include_pad) {
  std::int64_t h0 = oh * s.stride_h - s.pad_h, w0 = ow * s.stride_w - s.pad_w;
  std::int64_t h1 = std::min(h0 + s.kh, s.h + s.pad_h), w1 = std::min(w0 + s.kw, s.w + s.pad_w);
  const std::int64_t padded_size = (h1 - h0) * (w1 - w0);
  h0 = std::max<std::int64_t>(h0, 0);
  w0 = std::max<std::int64_t>(w0, 0);
  h1 = std::min(h1, s.h);
  w1 = std::min(w1, s.w);
  const std::int64_t inside = (h1 > h0 && w1 > w0) ? (h1 - h0) * (w1 - w0) : 0;
  return {h0, h1, w0, w1, count_include_pad ? padded_size : inside};
}
}  // namespace detail

// Average pooling forward.
// Requires: s passes check_pool2d_shape; x [n, c, h, w], y [n, c, out_h, out_w], no aliasing.
// Ensures: every y element is the window sum over the divisor (torch's rule; an empty window gives 0).
template <typename T>
void avg_pool2d_forward(const Pool2dShape& s, const T* x, T* y, bool count_include_pad) {
  constexpr const char* op = "avg_pool2d_forward";
  check_pool2d_shape(s, op);
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, op, "input and output pointers must not be null");
#pragma omp parallel for schedule(static)
  for (std::int64_t plane = 0; plane < s.n * s.c; ++plane) {
    const T* xp = x + plane * s.h * s.w;
    T* yp = y + plane * s.out_h * s.out_w;
    for (std::int64_t oh = 0; oh < s.out_h; ++oh) {
      for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
        const detail::AvgWindow win = detail::avg_window(s, oh, ow, count_include_pad);
        T sum = T(0);
        for (std::int64_t ih = win.h0; ih < win.h1; ++ih)
          for (std::int64_t iw = win.w0; iw < win.w1; ++iw) sum += xp[ih * s.w + iw];
        yp[oh * s.out_w + ow] = win.divisor > 0 ? sum / T(win.divisor) : T(0);
      }
    }
  }
}

// Average pooling backward. Requires: as the forward with dy [n, c, out_h, out_w], dx [n, c, h, w].
// Ensures: dx is overwritten with the gradient (each dy spread evenly over its window / divisor).
template <typename T>
void avg_pool2d_backward(const Pool2dShape& s, const T* dy, T* dx, bool count_include_pad) {
  constexpr const char* op = "avg_pool2d_backward";
  check_pool2d_shape(s, op);
  ARCLIGHT_CHECK(dy != nullptr && dx != nullptr, op, "gradient pointers must not be null");
#pragma omp parallel for schedule(static)
  for (std::int64_t plane = 0; plane < s.n * s.c; ++plane) {
    T* dxp = dx + plane * s.h * s.w;
    const T* dyp = dy + plane * s.out_h * s.out_w;
    for (std::int64_t k = 0; k < s.h * s.w; ++k) dxp[k] = T(0);
    for (std::int64_t oh = 0; oh < s.out_h; ++oh) {
      for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
        const detail::AvgWindow win = detail::avg_window(s, oh, ow, count_include_pad);
        if (win.divisor <= 0) continue;
        const T g = dyp[oh * s.out_w + ow] / T(win.divisor);
        for (std::int64_t ih = win.h0; ih < win.h1; ++ih)
          for (std::int64_t iw = win.w0; iw < win.w1; ++iw) dxp[ih * s.w + iw] += g;
      }
    }
  }
}

// Max pooling forward (padding acts as -inf).
// Requires: s passes check_pool2d_shape; x [n, c, h, w], y [n, c, out_h, out_w], indices the same size as y
// or null. Ensures: y = window max (NaN if the window holds a NaN, as torch), indices = ih * w + iw of the
// first maximum in row-major window order.
template <typename T>
void max_pool2d_forward(const Pool2dShape& s, const T* x, T* y, std::int64_t* indices) {
  constexpr const char* op = "max_pool2d_forward";
  check_pool2d_shape(s, op);
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, op, "input and output pointers must not be null");
#pragma omp parallel for schedule(static)
  for (std::int64_t plane = 0; plane < s.n * s.c; ++plane) {
    const T* xp = x + plane * s.h * s.w;
    T* yp = y + plane * s.out_h * s.out_w;
    std::int64_t* ip = indices ? indices + plane * s.out_h * s.out_w : nullptr;
    for (std::int64_t oh = 0; oh < s.out_h; ++oh) {
      const std::int64_t h0 = std::max<std::int64_t>(oh * s.stride_h - s.pad_h, 0);
      const std::int64_t h1 = std::min(oh * s.stride_h - s.pad_h + s.kh, s.h);
      for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
        const std::int64_t w0 = std::max<std::int64_t>(ow * s.stride_w - s.pad_w, 0);
        const std::int64_t w1 = std::min(ow * s.stride_w - s.pad_w + s.kw, s.w);
        T best = -std::numeric_limits<T>::infinity();
        std::int64_t best_i = h0 * s.w + w0;
        bool saw_nan = false;
        for (std::int64_t ih = h0; ih < h1 && !saw_nan; ++ih) {
          for (std::int64_t iw = w0; iw < w1; ++iw) {
            const T v = xp[ih * s.w + iw];
            if (v > best || std::isnan(v)) {
              best = v;
              best_i = ih * s.w + iw;
              if (std::isnan(v)) {
                saw_nan = true;  // NaN wins and stays, as in torch
                break;
              }
            }
          }
        }
        yp[oh * s.out_w + ow] = best;
        if (ip) ip[oh * s.out_w + ow] = best_i;
      }
    }
  }
}

// Max pooling backward: dx[index] += dy over each window's argmax.
// Requires: indices from max_pool2d_forward with the same shape; dy [n, c, out_h, out_w], dx [n, c, h, w].
// Ensures: dx is overwritten (zero except at argmax positions); an index outside the plane throws.
template <typename T>
void max_pool2d_backward(const Pool2dShape& s, const T* dy, const std::int64_t* indices, T* dx) {
  constexpr const char* op = "max_pool2d_backward";
  check_pool2d_shape(s, op);
  ARCLIGHT_CHECK(dy != nullptr && indices != nullptr && dx != nullptr, op,
                 "gradient and index pointers must not be null");
  const std::int64_t HW = s.h * s.w, P = s.out_h * s.out_w;
  bool bad = false;
#pragma omp parallel for schedule(static) reduction(|| : bad)
  for (std::int64_t plane = 0; plane < s.n * s.c; ++plane) {
    T* dxp = dx + plane * HW;
    for (std::int64_t k = 0; k < HW; ++k) dxp[k] = T(0);
    for (std::int64_t p = 0; p < P; ++p) {
      const std::int64_t idx = indices[plane * P + p];
      if (idx < 0 || idx >= HW) {
        bad = true;
        continue;
      }
      dxp[idx] += dy[plane * P + p];
    }
  }
  ARCLIGHT_CHECK(!bad, op, "an argmax index lies outside the ", s.h, "x", s.w, " input plane");
}

// Global average pooling: y[n, c] = mean over the hw elements of plane (n, c).
// Requires: x [n, c, hw], y [n, c], hw >= 1. Ensures: y overwritten (sum in double).
template <typename T>
void global_avg_pool_forward(std::int64_t n, std::int64_t c, std::int64_t hw, const T* x, T* y) {
  constexpr const char* op = "global_avg_pool_forward";
  ARCLIGHT_CHECK(n >= 1 && c >= 1 && hw >= 1, op, "expected sizes n, c, h*w >= 1, got ", n, ", ", c, ", ", hw);
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, op, "input and output pointers must not be null");
#pragma omp parallel for schedule(static)
  for (std::int64_t plane = 0; plane < n * c; ++plane) {
    const T* xp = x + plane * hw;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (std::int64_t k = 0; k < hw; ++k) sum += double(xp[k]);
    y[plane] = T(sum / double(hw));
  }
}

// Global average pooling backward: dx[n, c, k] = dy[n, c] / hw. Ensures: dx overwritten.
template <typename T>
void global_avg_pool_backward(std::int64_t n, std::int64_t c, std::int64_t hw, const T* dy, T* dx) {
  constexpr const char* op = "global_avg_pool_backward";
  ARCLIGHT_CHECK(n >= 1 && c >= 1 && hw >= 1, op, "expected sizes n, c, h*w >= 1, got ", n, ", ", c, ", ", hw);
  ARCLIGHT_CHECK(dy != nullptr && dx != nullptr, op, "gradient pointers must not be null");
#pragma omp parallel for schedule(static)
  for (std::int64_t plane = 0; plane < n * c; ++plane) {
    const T g = dy[plane] / T(hw);
    T* dxp = dx + plane * hw;
#pragma omp simd
    for (std::int64_t k = 0; k < hw; ++k) dxp[k] = g;
  }
}

}  // namespace arclight::kernels::cpu
