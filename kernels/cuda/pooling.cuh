// CUDA kernels of 2-D window pooling (declared in kernels/cuda/launchers_ops.hpp), with exactly the semantics of
// kernels/cpu/pooling.hpp: average pooling with ceil_mode and count_include_pad as torch.nn.AvgPool2d (NFNet's
// DownsampleAvg shortcut), max pooling with the first row-major maximum's flat in-plane index and NaN winning.
// Forward: one thread per output. Backward: one thread per INPUT element gathering from the (few) windows that
// cover it, in row-major output order — the order the CPU kernel scatters in — so there are no atomics, the
// result is deterministic and equals the CPU's float sums.
#pragma once

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers_ops.hpp"

namespace arclight::kernels::cuda {

namespace pool {

// The average window of output (oh, ow): clipped bounds and torch's divisor (kernels/cpu/pooling.hpp avg_window).
struct Window {
  std::int64_t h0, h1, w0, w1, divisor;
};
__device__ __forceinline__ Window avg_window(const Pool2dShape& s, std::int64_t oh, std::int64_t ow, bool include_pad) {
  std::int64_t h0 = oh * s.stride_h - s.pad_h, w0 = ow * s.stride_w - s.pad_w;
  std::int64_t h1 = min(h0 + s.kh, s.h + s.pad_h), w1 = min(w0 + s.kw, s.w + s.pad_w);
  const std::int64_t padded = (h1 - h0) * (w1 - w0);
  h0 = max(h0, std::int64_t(0));
  w0 = max(w0, std::int64_t(0));
  h1 = min(h1, s.h);
  w1 = min(w1, s.w);
  const std::int64_t inside = (h1 > h0 && w1 > w0) ? (h1 - h0) * (w1 - w0) : 0;
  return {h0, h1, w0, w1, include_pad ? padded : inside};
}

// The outputs along one axis whose raw window [o·stride − pad, o·stride − pad + k) holds input position i.
__device__ __forceinline__ void covering(std::int64_t i, std::int64_t k, std::int64_t stride, std::int64_t pad,
                                         std::int64_t out, std::int64_t& o0, std::int64_t& o1) {
  const std::int64_t lo = i + pad - k + 1;  // o·stride >= lo
  o0 = lo <= 0 ? 0 : (lo + stride - 1) / stride;
  o1 = min((i + pad) / stride + 1, out);  // exclusive
}

__global__ void avg_forward_kernel(Pool2dShape s, const float* __restrict__ x, float* __restrict__ y, bool include_pad) {
  const std::int64_t total = s.output_numel();
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t ow = i % s.out_w, oh = (i / s.out_w) % s.out_h, plane = i / (s.out_w * s.out_h);
    const float* xp = x + plane * s.h * s.w;
    const Window win = avg_window(s, oh, ow, include_pad);
    float sum = 0.f;
    for (std::int64_t ih = win.h0; ih < win.h1; ++ih)
      for (std::int64_t iw = win.w0; iw < win.w1; ++iw) sum += xp[ih * s.w + iw];
    y[i] = win.divisor > 0 ? sum / float(win.divisor) : 0.f;
  }
}

__global__ void avg_backward_kernel(Pool2dShape s, const float* __restrict__ dy, float* __restrict__ dx,
                                    bool include_pad) {
  const std::int64_t total = s.input_numel();
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t iw = i % s.w, ih = (i / s.w) % s.h, plane = i / (s.w * s.h);
    const float* dyp = dy + plane * s.out_h * s.out_w;
    std::int64_t oh0, oh1, ow0, ow1;
    covering(ih, s.kh, s.stride_h, s.pad_h, s.out_h, oh0, oh1);
    covering(iw, s.kw, s.stride_w, s.pad_w, s.out_w, ow0, ow1);
    float acc = 0.f;
    for (std::int64_t oh = oh0; oh < oh1; ++oh)
      for (std::int64_t ow = ow0; ow < ow1; ++ow) {
        const Window win = avg_window(s, oh, ow, include_pad);
        if (win.divisor > 0) acc += dyp[oh * s.out_w + ow] / float(win.divisor);
      }
    dx[i] = acc;
  }
}

__global__ void max_forward_kernel(Pool2dShape s, const float* __restrict__ x, float* __restrict__ y,
                                   std::int64_t* __restrict__ indices) {
  const std::int64_t total = s.output_numel();
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t ow = i % s.out_w, oh = (i / s.out_w) % s.out_h, plane = i / (s.out_w * s.out_h);
    const float* xp = x + plane * s.h * s.w;
    const std::int64_t h0 = max(oh * s.stride_h - s.pad_h, std::int64_t(0));
    const std::int64_t h1 = min(oh * s.stride_h - s.pad_h + s.kh, s.h);
    const std::int64_t w0 = max(ow * s.stride_w - s.pad_w, std::int64_t(0));
    const std::int64_t w1 = min(ow * s.stride_w - s.pad_w + s.kw, s.w);
    float best = -INFINITY;
    std::int64_t best_i = h0 * s.w + w0;
    bool nan = false;
    for (std::int64_t ih = h0; ih < h1 && !nan; ++ih)
      for (std::int64_t iw = w0; iw < w1; ++iw) {
        const float v = xp[ih * s.w + iw];
        if (v > best || v != v) {
          best = v;
          best_i = ih * s.w + iw;
          if (v != v) {
            nan = true;
            break;
          }
        }
      }
    y[i] = best;
    if (indices) indices[i] = best_i;
  }
}

__global__ void max_backward_kernel(Pool2dShape s, const float* __restrict__ dy, const std::int64_t* __restrict__ indices,
                                    float* __restrict__ dx) {
  const std::int64_t total = s.input_numel();
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t iw = i % s.w, ih = (i / s.w) % s.h, plane = i / (s.w * s.h);
    const std::int64_t flat = ih * s.w + iw;
    const std::int64_t base = plane * s.out_h * s.out_w;
    std::int64_t oh0, oh1, ow0, ow1;
    covering(ih, s.kh, s.stride_h, s.pad_h, s.out_h, oh0, oh1);
    covering(iw, s.kw, s.stride_w, s.pad_w, s.out_w, ow0, ow1);
    float acc = 0.f;
    for (std::int64_t oh = oh0; oh < oh1; ++oh)
      for (std::int64_t ow = ow0; ow < ow1; ++ow)
        if (indices[base + oh * s.out_w + ow] == flat) acc += dy[base + oh * s.out_w + ow];
    dx[i] = acc;
  }
}

inline void check_shape(const Pool2dShape& s, const char* op) {
  ARCLIGHT_CHECK(s.n >= 1 && s.c >= 1 && s.h >= 1 && s.w >= 1 && s.kh >= 1 && s.kw >= 1 && s.stride_h >= 1 &&
                     s.stride_w >= 1 && s.pad_h >= 0 && s.pad_w >= 0 && 2 * s.pad_h <= s.kh && 2 * s.pad_w <= s.kw &&
                     s.out_h >= 1 && s.out_w >= 1,
                 op, "invalid pooling shape: input [", s.n, ", ", s.c, ", ", s.h, ", ", s.w, "], kernel (", s.kh, ", ",
                 s.kw, "), stride (", s.stride_h, ", ", s.stride_w, "), pad (", s.pad_h, ", ", s.pad_w, "), output ",
                 s.out_h, "x", s.out_w, " (expected kernels::pool2d_shape's result)");
}

constexpr int kThreads = 256;

}  // namespace pool

void avg_pool2d_forward(const Pool2dShape& s, const float* x, float* y, bool count_include_pad, Stream stream) {
  constexpr const char* op = "avg_pool2d_forward";
  pool::check_shape(s, op);
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, op, "input and output pointers must not be null");
  pool::avg_forward_kernel<<<detail::elementwise_grid(s.output_numel(), pool::kThreads), pool::kThreads, 0, stream>>>(
      s, x, y, count_include_pad);
  detail::check_launch(op);
}

void avg_pool2d_backward(const Pool2dShape& s, const float* dy, float* dx, bool count_include_pad, Stream stream) {
  constexpr const char* op = "avg_pool2d_backward";
  pool::check_shape(s, op);
  ARCLIGHT_CHECK(dy != nullptr && dx != nullptr, op, "gradient pointers must not be null");
  pool::avg_backward_kernel<<<detail::elementwise_grid(s.input_numel(), pool::kThreads), pool::kThreads, 0, stream>>>(
      s, dy, dx, count_include_pad);
  detail::check_launch(op);
}

void max_pool2d_forward(const Pool2dShape& s, const float* x, float* y, std::int64_t* indices, Stream stream) {
  constexpr const char* op = "max_pool2d_forward";
  pool::check_shape(s, op);
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, op, "input and output pointers must not be null");
  pool::max_forward_kernel<<<detail::elementwise_grid(s.output_numel(), pool::kThreads), pool::kThreads, 0, stream>>>(
      s, x, y, indices);
  detail::check_launch(op);
}

void max_pool2d_backward(const Pool2dShape& s, const float* dy, const std::int64_t* indices, float* dx, Stream stream) {
  constexpr const char* op = "max_pool2d_backward";
  pool::check_shape(s, op);
  ARCLIGHT_CHECK(dy != nullptr && indices != nullptr && dx != nullptr, op,
                 "gradient and index pointers must not be null");
  pool::max_backward_kernel<<<detail::elementwise_grid(s.input_numel(), pool::kThreads), pool::kThreads, 0, stream>>>(
      s, dy, indices, dx);
  detail::check_launch(op);
}

}  // namespace arclight::kernels::cuda
