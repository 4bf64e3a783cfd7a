// CUDA kernels of depthwise convolution (declared in kernels/cuda/launchers_ops.hpp): groups == c_in == c_out
// (channel multiplier 1), any kernel size, stride, dilation and explicit — possibly asymmetric — padding, NCHW
// float32, the contract of kernels/cpu/conv2d.hpp. EfficientNet's depthwise layers are memory-bound and cuDNN's
// NCHW float32 depthwise passes are slow (its backward-filter at 112×112 measured 0.1 TFLOP/s on the H100, the
// outlier of bench_device_dnn), so the op layer routes multiplier-1 depthwise convolutions here.
//   forward:         one thread per output, the taps read through the cache;
//   backward-data:   one thread per input element gathering the outputs whose windows cover it (no atomics);
//   backward-filter: a deterministic two-level reduction — grid (channel, chunk of 4096 output positions), each
//                    block sums dy·x for every tap (and dy for the bias) with block_sum, partials to the
//                    workspace; a second kernel adds each (channel, tap)'s partials in chunk order.
#pragma once

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers_ops.hpp"

namespace arclight::kernels::cuda {

namespace dw {

constexpr int kThreads = 256;
constexpr std::int64_t kChunk = 4096;  // output positions (over n, out_h, out_w) per backward-filter block

inline std::int64_t chunks(const Conv2dShape& s) { return detail::ceil_div(s.n * s.out_h * s.out_w, kChunk); }

__global__ void forward_kernel(Conv2dShape s, const float* __restrict__ x, const float* __restrict__ w,
                               const float* __restrict__ bias, float* __restrict__ y) {
  const std::int64_t total = s.output_numel();
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t ow = i % s.out_w, oh = (i / s.out_w) % s.out_h, nc = i / (s.out_w * s.out_h);
    const std::int64_t c = nc % s.c_out;
    const float* xp = x + nc * s.h * s.w;
    const float* wp = w + c * s.kh * s.kw;
    const std::int64_t h0 = oh * s.stride_h - s.pad_top, w0 = ow * s.stride_w - s.pad_left;
    float acc = bias ? bias[c] : 0.f;
    for (std::int64_t ky = 0; ky < s.kh; ++ky) {
      const std::int64_t ih = h0 + ky * s.dilation_h;
      if (ih < 0 || ih >= s.h) continue;
      for (std::int64_t kx = 0; kx < s.kw; ++kx) {
        const std::int64_t iw = w0 + kx * s.dilation_w;
        if (iw >= 0 && iw < s.w) acc += xp[ih * s.w + iw] * wp[ky * s.kw + kx];
      }
    }
    y[i] = acc;
  }
}

__global__ void backward_data_kernel(Conv2dShape s, const float* __restrict__ dy, const float* __restrict__ w,
                                     float* __restrict__ dx) {
  const std::int64_t total = s.input_numel();
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t iw = i % s.w, ih = (i / s.w) % s.h, nc = i / (s.w * s.h);
    const std::int64_t c = nc % s.c_in;
    const float* dyp = dy + nc * s.out_h * s.out_w;
    const float* wp = w + c * s.kh * s.kw;
    float acc = 0.f;
    for (std::int64_t ky = 0; ky < s.kh; ++ky) {
      const std::int64_t th = ih + s.pad_top - ky * s.dilation_h;  // = oh·stride_h
      if (th < 0 || th % s.stride_h != 0) continue;
      const std::int64_t oh = th / s.stride_h;
      if (oh >= s.out_h) continue;
      for (std::int64_t kx = 0; kx < s.kw; ++kx) {
        const std::int64_t tw = iw + s.pad_left - kx * s.dilation_w;
        if (tw < 0 || tw % s.stride_w != 0) continue;
        const std::int64_t ow = tw / s.stride_w;
        if (ow < s.out_w) acc += dyp[oh * s.out_w + ow] * wp[ky * s.kw + kx];
      }
    }
    dx[i] = acc;
  }
}

// Block (chunk, channel): partial[(c·chunks + chunk)·(taps + 1) + t] = Σ over the chunk's output positions of
// dy·x at tap t, and at t = taps the plain Σ dy (the bias gradient).
__global__ void backward_filter_partial_kernel(Conv2dShape s, const float* __restrict__ x,
                                               const float* __restrict__ dy, std::int64_t n_chunks,
                                               bool with_weight, float* __restrict__ partial) {
  __shared__ float scratch[33];
  const std::int64_t c = blockIdx.y, chunk = blockIdx.x;
  const std::int64_t plane_out = s.out_h * s.out_w, positions = s.n * plane_out;
  const std::int64_t p0 = chunk * kChunk, p1 = min(p0 + kChunk, positions);
  const std::int64_t taps = s.kh * s.kw;
  float* out = partial + (c * n_chunks + chunk) * (taps + 1);
  // The bias sum first.
  float acc = 0.f;
  for (std::int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    const std::int64_t n = p / plane_out, o = p % plane_out;
    acc += dy[(n * s.c_out + c) * plane_out + o];
  }
  acc = detail::block_sum(acc, scratch);
  if (threadIdx.x == 0) out[taps] = acc;
  if (!with_weight) return;
  for (std::int64_t t = 0; t < taps; ++t) {
    const std::int64_t ky = t / s.kw, kx = t % s.kw;
    acc = 0.f;
    for (std::int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
      const std::int64_t n = p / plane_out, o = p % plane_out;
      const std::int64_t oh = o / s.out_w, ow = o % s.out_w;
      const std::int64_t ih = oh * s.stride_h - s.pad_top + ky * s.dilation_h;
      const std::int64_t iw = ow * s.stride_w - s.pad_left + kx * s.dilation_w;
      if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
      acc += dy[(n * s.c_out + c) * plane_out + o] * x[((n * s.c_in + c) * s.h + ih) * s.w + iw];
    }
    acc = detail::block_sum(acc, scratch);
    if (threadIdx.x == 0) out[t] = acc;
  }
}

// One thread per (channel, tap): the partials of the channel's chunks added in chunk order.
__global__ void backward_filter_finish_kernel(std::int64_t channels, std::int64_t taps, std::int64_t n_chunks,
                                              const float* __restrict__ partial, float* __restrict__ dw,
                                              float* __restrict__ dbias) {
  const std::int64_t total = channels * (taps + 1);
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t c = i / (taps + 1), t = i % (taps + 1);
    float* dst = t == taps ? (dbias ? dbias + c : nullptr) : (dw ? dw + c * taps + t : nullptr);
    if (!dst) continue;
    float acc = 0.f;
    for (std::int64_t k = 0; k < n_chunks; ++k) acc += partial[(c * n_chunks + k) * (taps + 1) + t];
    *dst = acc;
  }
}

inline void check_shape(const Conv2dShape& s, const char* op) {
  ARCLIGHT_CHECK(s.n >= 1 && s.c_in >= 1 && s.h >= 1 && s.w >= 1 && s.kh >= 1 && s.kw >= 1, op,
                 "expected positive sizes, got input [", s.n, ", ", s.c_in, ", ", s.h, ", ", s.w, "], kernel ", s.kh,
                 "x", s.kw);
  ARCLIGHT_CHECK(s.groups == s.c_in && s.c_out == s.c_in, op,
                 "expected a depthwise convolution with channel multiplier 1 (groups == c_in == c_out), got groups ",
                 s.groups, ", c_in ", s.c_in, ", c_out ", s.c_out);
  ARCLIGHT_CHECK(s.stride_h >= 1 && s.stride_w >= 1 && s.dilation_h >= 1 && s.dilation_w >= 1 && s.pad_top >= 0 &&
                     s.pad_left >= 0 && s.pad_bottom >= 0 && s.pad_right >= 0,
                 op, "expected strides and dilations >= 1 and pads >= 0");
  ARCLIGHT_CHECK(s.out_h == conv_out_size(s.h, s.kh, s.stride_h, s.pad_top, s.pad_bottom, s.dilation_h) &&
                     s.out_w == conv_out_size(s.w, s.kw, s.stride_w, s.pad_left, s.pad_right, s.dilation_w) &&
                     s.out_h >= 1 && s.out_w >= 1,
                 op, "output size ", s.out_h, "x", s.out_w, " does not follow from the input, kernel, stride and pads");
  ARCLIGHT_CHECK(s.c_in <= 65535, op, "at most 65535 channels (the backward-filter grid's y dimension), got ", s.c_in);
}

}  // namespace dw

std::int64_t depthwise_conv2d_backward_filter_workspace_floats(const Conv2dShape& s) {
  return s.c_in * dw::chunks(s) * (s.kh * s.kw + 1);
}

void depthwise_conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y,
                              Stream stream) {
  constexpr const char* op = "depthwise_conv2d_forward";
  dw::check_shape(s, op);
  ARCLIGHT_CHECK(x != nullptr && w != nullptr && y != nullptr, op, "input, weight and output must not be null");
  dw::forward_kernel<<<detail::elementwise_grid(s.output_numel(), dw::kThreads), dw::kThreads, 0, stream>>>(s, x, w,
                                                                                                             bias, y);
  detail::check_launch(op);
}

void depthwise_conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx, Stream stream) {
  constexpr const char* op = "depthwise_conv2d_backward_data";
  dw::check_shape(s, op);
  ARCLIGHT_CHECK(dy != nullptr && w != nullptr && dx != nullptr, op, "dy, weight and dx must not be null");
  dw::backward_data_kernel<<<detail::elementwise_grid(s.input_numel(), dw::kThreads), dw::kThreads, 0, stream>>>(
      s, dy, w, dx);
  detail::check_launch(op);
}

void depthwise_conv2d_backward_filter(const Conv2dShape& s, const float* x, const float* dy, float* dw_out,
                                      float* dbias, float* workspace, Stream stream) {
  constexpr const char* op = "depthwise_conv2d_backward_filter";
  dw::check_shape(s, op);
  ARCLIGHT_CHECK(dy != nullptr && (x != nullptr || dw_out == nullptr), op,
                 "dy (and x when dw is wanted) must not be null");
  if (dw_out == nullptr && dbias == nullptr) return;
  ARCLIGHT_CHECK(workspace != nullptr, op, "workspace must not be null (",
                 depthwise_conv2d_backward_filter_workspace_floats(s), " floats)");
  const std::int64_t n_chunks = dw::chunks(s);
  ARCLIGHT_CHECK(n_chunks <= 0x7FFFFFFF, op, "too many output positions: ", s.n * s.out_h * s.out_w);
  const dim3 grid(unsigned(n_chunks), unsigned(s.c_in));
  dw::backward_filter_partial_kernel<<<grid, dw::kThreads, 0, stream>>>(s, x, dy, n_chunks, dw_out != nullptr,
                                                                        workspace);
  detail::check_launch(op);
  const std::int64_t taps = s.kh * s.kw, total = s.c_in * (taps + 1);
  dw::backward_filter_finish_kernel<<<detail::elementwise_grid(total, dw::kThreads), dw::kThreads, 0, stream>>>(
      s.c_in, taps, n_chunks, workspace, dw_out, dbias);
  detail::check_launch(op);
}

}  // namespace arclight::kernels::cuda
