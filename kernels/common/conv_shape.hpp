// Plain shape structs of the convolution and pooling kernels and the arithmetic that fills them: output
// sizes, explicit (symmetric or asymmetric) padding and TensorFlow "same" padding. Shared by the CPU kernels
// (kernels/cpu/conv2d.hpp, depthwise_conv2d.hpp, pooling.hpp) and the CUDA launchers, so it is pure integer
// arithmetic: no exceptions, no allocation, nvcc-compilable. Validation (which throws) lives in the CPU
// launchers: check_conv2d_shape / make_conv2d_shape in kernels/cpu/conv2d.hpp and check_pool2d_shape in
// kernels/cpu/pooling.hpp.
#pragma once

#include <cstdint>

#include "kernels/common/macros.hpp"

namespace arclight::kernels {

// How a convolution is padded. Explicit: the four pads are given. Same: TensorFlow's "SAME" rule,
// out = ceil(in / stride) with the total pad max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)
// split as floor(total / 2) before and the rest after (so an odd total pads one more at the bottom/right,
// exactly as TF and timm's pad_same / Conv2dSame do).
enum class PadMode : int { Explicit = 0, Same = 1 };

// The user-facing options of a 2-D convolution (everything but the tensor sizes).
struct Conv2dParams {
  std::int64_t stride_h = 1, stride_w = 1;
  PadMode pad_mode = PadMode::Explicit;
  std::int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;  // used when pad_mode == Explicit
  std::int64_t dilation_h = 1, dilation_w = 1;
  std::int64_t groups = 1;
};

// Every size a convolution kernel needs. Layout: input [n, c_in, h, w], weight [c_out, c_in/groups, kh, kw],
// output [n, c_out, out_h, out_w], all contiguous row-major (NCHW). Pads are always explicit here (a "same"
// conv has them resolved by conv2d_shape).
struct Conv2dShape {
  std::int64_t n = 0, c_in = 0, h = 0, w = 0;
  std::int64_t c_out = 0, kh = 0, kw = 0;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  std::int64_t dilation_h = 1, dilation_w = 1;
  std::int64_t groups = 1;
  std::int64_t out_h = 0, out_w = 0;

  ARCLIGHT_HOST_DEVICE std::int64_t c_in_per_group() const { return c_in / groups; }
  ARCLIGHT_HOST_DEVICE std::int64_t c_out_per_group() const { return c_out / groups; }
  // Fan-in of one output unit: c_in/groups * kh * kw (also the GEMM's K dimension per group).
  ARCLIGHT_HOST_DEVICE std::int64_t fan_in() const { return c_in_per_group() * kh * kw; }
  ARCLIGHT_HOST_DEVICE std::int64_t input_numel() const { return n * c_in * h * w; }
  ARCLIGHT_HOST_DEVICE std::int64_t weight_numel() const { return c_out * fan_in(); }
  ARCLIGHT_HOST_DEVICE std::int64_t output_numel() const { return n * c_out * out_h * out_w; }
  // Multiply-accumulates of the forward pass (each backward pass does the same amount).
  ARCLIGHT_HOST_DEVICE std::int64_t macs() const { return n * c_out * out_h * out_w * fan_in(); }
};

// Output length along one axis for an explicit padding (PyTorch's floor rule). May be <= 0 for a window
// larger than the padded input; the launchers reject that.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE std::int64_t conv_out_size(std::int64_t in, std::int64_t k, std::int64_t stride,
                                                                std::int64_t pad_before, std::int64_t pad_after,
                                                                std::int64_t dilation) {
  const std::int64_t span = dilation * (k - 1) + 1;
  const std::int64_t padded = in + pad_before + pad_after;
  if (stride <= 0) return -1;
  if (padded < span) return 0;
  return (padded - span) / stride + 1;
}

// TF "SAME" padding along one axis: writes the pad before/after that makes out = ceil(in / stride).
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE void same_padding(std::int64_t in, std::int64_t k, std::int64_t stride,
                                                       std::int64_t dilation, std::int64_t& pad_before,
                                                       std::int64_t& pad_after) {
  const std::int64_t out = stride > 0 ? (in + stride - 1) / stride : 0;
  std::int64_t total = (out - 1) * stride + (k - 1) * dilation + 1 - in;
  if (total < 0) total = 0;
  pad_before = total / 2;
  pad_after = total - pad_before;
}

// Fills a Conv2dShape from the tensor sizes and the options, resolving "same" padding and the output size.
// Pure arithmetic: the result is only meaningful after check_conv2d_shape (kernels/cpu/conv2d.hpp) accepts it.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE Conv2dShape conv2d_shape(std::int64_t n, std::int64_t c_in, std::int64_t h,
                                                              std::int64_t w, std::int64_t c_out, std::int64_t kh,
                                                              std::int64_t kw, const Conv2dParams& p) {
  Conv2dShape s;
  s.n = n;
  s.c_in = c_in;
  s.h = h;
  s.w = w;
  s.c_out = c_out;
  s.kh = kh;
  s.kw = kw;
  s.stride_h = p.stride_h;
  s.stride_w = p.stride_w;
  s.dilation_h = p.dilation_h;
  s.dilation_w = p.dilation_w;
  s.groups = p.groups;
  if (p.pad_mode == PadMode::Same) {
    same_padding(h, kh, p.stride_h, p.dilation_h, s.pad_top, s.pad_bottom);
    same_padding(w, kw, p.stride_w, p.dilation_w, s.pad_left, s.pad_right);
  } else {
    s.pad_top = p.pad_top;
    s.pad_bottom = p.pad_bottom;
    s.pad_left = p.pad_left;
    s.pad_right = p.pad_right;
  }
  s.out_h = conv_out_size(h, kh, s.stride_h, s.pad_top, s.pad_bottom, s.dilation_h);
  s.out_w = conv_out_size(w, kw, s.stride_w, s.pad_left, s.pad_right, s.dilation_w);
  return s;
}

// Sizes of a 2-D pooling window over [n, c, h, w] -> [n, c, out_h, out_w]. Symmetric pads, PyTorch
// semantics (ceil_mode: the last window may start in the bottom/right pad only if it starts inside the
// input or the left pad, exactly as torch.nn.AvgPool2d / MaxPool2d).
struct Pool2dShape {
  std::int64_t n = 0, c = 0, h = 0, w = 0;
  std::int64_t kh = 0, kw = 0;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_h = 0, pad_w = 0;
  bool ceil_mode = false;
  std::int64_t out_h = 0, out_w = 0;

  ARCLIGHT_HOST_DEVICE std::int64_t input_numel() const { return n * c * h * w; }
  ARCLIGHT_HOST_DEVICE std::int64_t output_numel() const { return n * c * out_h * out_w; }
};

// PyTorch's pooling_output_shape: floor or ceil of (in + 2 pad - k) / stride, plus one, with the ceil_mode
// correction that drops a last window starting entirely in the right pad.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE std::int64_t pool_out_size(std::int64_t in, std::int64_t k, std::int64_t stride,
                                                                std::int64_t pad, bool ceil_mode) {
  if (stride <= 0) return -1;
  const std::int64_t num = in + 2 * pad - k + (ceil_mode ? stride - 1 : 0);
  if (num < 0) return 0;
  std::int64_t out = num / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// Fills a Pool2dShape (check it with check_pool2d_shape before use). Stride <= 0 means "= kernel size",
// PyTorch's default.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE Pool2dShape pool2d_shape(std::int64_t n, std::int64_t c, std::int64_t h,
                                                              std::int64_t w, std::int64_t kh, std::int64_t kw,
                                                              std::int64_t stride_h, std::int64_t stride_w,
                                                              std::int64_t pad_h, std::int64_t pad_w,
                                                              bool ceil_mode) {
  Pool2dShape s;
  s.n = n;
  s.c = c;
  s.h = h;
  s.w = w;
  s.kh = kh;
  s.kw = kw;
  s.stride_h = stride_h > 0 ? stride_h : kh;
  s.stride_w = stride_w > 0 ? stride_w : kw;
  s.pad_h = pad_h;
  s.pad_w = pad_w;
  s.ceil_mode = ceil_mode;
  s.out_h = pool_out_size(h, kh, s.stride_h, pad_h, ceil_mode);
  s.out_w = pool_out_size(w, kw, s.stride_w, pad_w, ceil_mode);
  return s;
}

}  // namespace arclight::kernels
