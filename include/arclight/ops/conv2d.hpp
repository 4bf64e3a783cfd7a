// Differentiable 2-D convolution and NFNet's scaled weight standardisation.
//
// conv2d(x, w, bias, params): NCHW, weights [C_out, C_in/groups, kH, kW], any stride, explicit (possibly
// asymmetric) or TensorFlow-"same" padding, dilation and groups (depthwise included). The op validates the
// tensors (kernels/cpu/conv2d.hpp's make_conv2d_shape: ranks, channel mismatch, groups not dividing), makes
// them contiguous and calls the CPU kernels, which pick a 1x1 GEMM, the direct depthwise kernel or chunked
// im2col + GEMM. The backward calls conv2d_backward_data / conv2d_backward_weight; it keeps only what it
// needs (the input only when the weight needs a gradient, the weight only when the input does).
//
// scaled_std_weight(w, gain, gamma, eps): Ŵ = gain·γ·(W − mean)/sqrt(var·fan_in + eps) per output channel
// (METHOD.md; kernels/cpu/weight_standardization.hpp), differentiable to W and gain, so
// conv2d(x, scaled_std_weight(w, gain, γ, eps), b, p) is NFNet's ScaledStdConv2d with gradients flowing
// through the standardisation.
#pragma once

#include <cmath>
#include <vector>

#include "arclight/ops/activation.hpp"
#include "kernels/common/conv_shape.hpp"
#include "kernels/cpu/conv2d.hpp"
#include "kernels/cpu/weight_standardization.hpp"

namespace arclight::ops {

using kernels::Conv2dParams;
using kernels::PadMode;

// Options of a square convolution: stride, symmetric padding and dilation the same along H and W.
inline Conv2dParams conv2d_params(std::int64_t stride = 1, std::int64_t padding = 0, std::int64_t dilation = 1,
                                  std::int64_t groups = 1) {
  Conv2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = padding;
  p.dilation_h = p.dilation_w = dilation;
  p.groups = groups;
  return p;
}

// Options of a TensorFlow-"same" convolution: out = ceil(in / stride), the total pad split floor/ceil
// (one more at the bottom/right when odd), as TF and timm's Conv2dSame.
inline Conv2dParams conv2d_params_same(std::int64_t stride = 1, std::int64_t dilation = 1, std::int64_t groups = 1) {
  Conv2dParams p = conv2d_params(stride, 0, dilation, groups);
  p.pad_mode = PadMode::Same;
  return p;
}

namespace detail {
inline const char* conv2d_node_name(kernels::cpu::ConvAlgo algo) {
  switch (algo) {
    case kernels::cpu::ConvAlgo::Depthwise: return "conv2d[depthwise]";
    case kernels::cpu::ConvAlgo::Gemm1x1: return "conv2d[1x1]";
    default: return "conv2d[im2col]";
  }
}

// The device path of conv2d (validated arguments): cuDNN forward / backward-data / backward-filter. Under
// cuda::AutocastScope(bf16 or f16) the input and weight are converted to that 16-bit type, cuDNN computes in it
// with float32 accumulation, and the output and gradients come back as float32 (the bias stays float32
// throughout); the 16-bit copies are what the backward keeps, and the backward converts the incoming gradient to
// the same type (under f16 a loss-scaled gradient beyond 65504 becomes inf, which cuda::GradScaler detects).
inline Tensor conv2d_depthwise_cuda(const kernels::Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias);

inline Tensor conv2d_cuda(const kernels::Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias) {
  if (s.groups == s.c_in && s.c_out == s.c_in && cuda::depthwise_kernels() == cuda::DepthwiseKernels::own)
    return conv2d_depthwise_cuda(s, x, w, bias);
  const DType amp = cuda::autocast_dtype();  // f32 (off), bf16 or f16
  const bool half = amp != DType::f32;
  const Device dev = x.device();
  const Tensor xc = half ? cuda::detail::convert(x, amp, "conv2d") : dense_detached(x);
  const Tensor wc = half ? cuda::detail::convert(w, amp, "conv2d") : dense_detached(w);
  const Tensor bc = dense_detached(bias);
  const char* node_name = "conv2d[cudnn]";
  profiler::Scope profile_scope_(node_name);
  Tensor y = empty({s.n, s.c_out, s.out_h, s.out_w}, xc.dtype(), dev);
  cuda::detail::conv2d_forward(s, xc, wc, bc, y);
  if (half) y = cuda::detail::convert(y, DType::f32, "conv2d");
  const bool need_x = x.requires_grad(), need_w = w.requires_grad(), need_b = bias.defined() && bias.requires_grad();
  const Tensor x_saved = need_w || need_b ? xc : Tensor(), w_saved = need_x ? wc : Tensor();
  autograd::record(node_name, {x, w, bias}, y,
                   [s, x_saved, w_saved, need_x, need_w, need_b, half, amp, dev, w_shape = w.shape(),
                    b_shape = bias.defined() ? bias.shape() : Shape{}](const std::vector<Tensor>& g) {
                     const Tensor gy = half ? cuda::detail::convert(g[0], amp, "conv2d_backward")
                                            : dense_detached(g[0]);
                     Tensor gx, gw, gb;
                     if (need_x) {
                       gx = empty({s.n, s.c_in, s.h, s.w}, gy.dtype(), dev);
                       cuda::detail::conv2d_backward_data(s, gy, w_saved, gx);
                       if (half) gx = cuda::detail::convert(gx, DType::f32, "conv2d_backward");
                     }
                     if (need_w || need_b) {
                       if (need_w) gw = empty(w_shape, gy.dtype(), dev);
                       if (need_b) gb = empty(b_shape, DType::f32, dev);
                       cuda::detail::conv2d_backward_filter(s, x_saved, gy, gw, gb);
                       if (need_w && half) gw = cuda::detail::convert(gw, DType::f32, "conv2d_backward");
                     }
                     return std::vector<Tensor>{gx, gw, gb};
                   });
  return y;
}

// Depthwise convolutions (multiplier 1) on the device: our float32 kernels (kernels/cuda/depthwise.cuh), also under
// bf16 / f16 autocast (the layer is memory-bound; converting would cost more than it saves).
inline Tensor conv2d_depthwise_cuda(const kernels::Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias) {
  const char* node_name = "conv2d[depthwise]";
  profiler::Scope profile_scope_(node_name);
  const Device dev = x.device();
  const Tensor xc = dense_detached(x), wc = dense_detached(w), bc = dense_detached(bias);
  Tensor y = empty({s.n, s.c_out, s.out_h, s.out_w}, DType::f32, dev);
  cuda::detail::depthwise_forward(s, xc, wc, bc, y);
  const bool need_x = x.requires_grad(), need_w = w.requires_grad(), need_b = bias.defined() && bias.requires_grad();
  const Tensor x_saved = need_w ? xc : Tensor(), w_saved = need_x ? wc : Tensor();
  autograd::record(node_name, {x, w, bias}, y,
                   [s, x_saved, w_saved, need_x, need_w, need_b, dev, w_shape = w.shape(),
                    b_shape = bias.defined() ? bias.shape() : Shape{}](const std::vector<Tensor>& g) {
                     const Tensor gy = dense_detached(g[0]);
                     Tensor gx, gw, gb;
                     if (need_x) {
                       gx = empty({s.n, s.c_in, s.h, s.w}, DType::f32, dev);
                       cuda::detail::depthwise_backward_data(s, gy, w_saved, gx);
                     }
                     if (need_w || need_b) {
                       if (need_w) gw = empty(w_shape, DType::f32, dev);
                       if (need_b) gb = empty(b_shape, DType::f32, dev);
                       cuda::detail::depthwise_backward_filter(s, x_saved, gy, gw, gb);
                     }
                     return std::vector<Tensor>{gx, gw, gb};
                   });
  return y;
}
}  // namespace detail

// conv2d: y = conv(x, w) + bias.
// requires: x a CPU f32/f64 or CUDA f32 tensor [N, C_in, H, W]; w [C_out, C_in/groups, kH, kW] and bias (undefined
//   for none, else C_out elements) of x's dtype and device; params with stride, dilation, groups >= 1, pads >= 0, groups
//   dividing C_in and C_out, and an output of at least 1x1 (else arclight::Error "conv2d: ..." naming what
//   was found and what was expected). Inputs may be non-contiguous (copied).
// ensures: a new contiguous [N, C_out, out_h, out_w] tensor; records dL/dx, dL/dw (shaped as w) and dL/dbias
//   (shaped as bias), each only when that input requires grad.
inline Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& params = {}) {
  const char* op = "conv2d";
  detail::check_floating_input(x, op, "input");
  detail::check_floating_input(w, op, "weight");
  const Device dev = detail::op_device(op, {&x, &w});
  cuda::detail::check_device(bias, dev, op, "bias");
  detail::check_same_dtype(x, w, op);
  if (bias.defined()) {
    detail::check_same_dtype(x, bias, op);
    ARCLIGHT_CHECK(bias.dim() == 1, op, "expected a bias of rank 1 [C_out], got ", bias.str());
  }
  const kernels::Conv2dShape s =
      kernels::cpu::make_conv2d_shape(x.shape(), w.shape(), params, bias.defined() ? bias.numel() : -1, op);
  if (dev.is_cuda()) return detail::conv2d_cuda(s, x, w, bias);
  // The profiler and the backward node name the algorithm, so the three kinds show up as separate rows.
  const char* node_name = detail::conv2d_node_name(kernels::cpu::resolve_conv_algo(s, kernels::cpu::ConvAlgo::Auto));
  profiler::Scope profile_scope_(node_name);
  const Tensor xc = detail::dense_detached(x), wc = detail::dense_detached(w), bc = detail::dense_detached(bias);
  Tensor y = empty({s.n, s.c_out, s.out_h, s.out_w}, x.dtype());
  dispatch_floating(x.dtype(), op, [&]<typename T>() {
    kernels::cpu::conv2d_forward<T>(s, xc.data_ptr<T>(), wc.data_ptr<T>(), detail::ptr_or_null<T>(bc),
                                    y.data_ptr<T>());
  });
  const bool need_x = x.requires_grad(), need_w = w.requires_grad(), need_b = bias.defined() && bias.requires_grad();
  // Keep only what the backward reads: x for dL/dw (and for the weight kernel's dL/dbias), w for dL/dx.
  const Tensor x_saved = need_w || need_b ? xc : Tensor(), w_saved = need_x ? wc : Tensor();
  autograd::record(node_name, {x, w, bias}, y,
                   [s, x_saved, w_saved, need_x, need_w, need_b, x_shape = x.shape(), w_shape = w.shape(),
                    b_shape = bias.defined() ? bias.shape() : Shape{}, dt = x.dtype()](const std::vector<Tensor>& g) {
                     const Tensor gy = detail::dense_detached(g[0]);
                     Tensor gx = need_x ? empty(x_shape, dt) : Tensor();
                     Tensor gw = need_w ? empty(w_shape, dt) : Tensor();
                     Tensor gb = need_b ? empty(b_shape, dt) : Tensor();
                     dispatch_floating(dt, "conv2d_backward", [&]<typename T>() {
                       if (need_x)
                         kernels::cpu::conv2d_backward_data<T>(s, gy.data_ptr<T>(), w_saved.data_ptr<T>(),
                                                               gx.data_ptr<T>());
                       if (need_w || need_b)  // the kernel skips the weight pass when dw is null
                         kernels::cpu::conv2d_backward_weight<T>(s, x_saved.data_ptr<T>(), gy.data_ptr<T>(),
                                                                 detail::ptr_or_null<T>(gw),
                                                                 detail::ptr_or_null<T>(gb));
                     });
                     return std::vector<Tensor>{gx, gw, gb};
                   });
  return y;
}

// scaled_std_weight: Ŵ[o, k] = gain[o]·gamma·(w[o, k] − mean_o)/sqrt(var_o·fan_in + eps), per output channel o
// over its fan_in = numel(w)/C_out weights, var the biased variance (METHOD.md's formula, eps exactly as
// written there). timm's ScaledStdConv2d(eps=ε') computes batch_norm(W)·gain·γ/sqrt(fan_in), which is this
// formula with eps = ε'·fan_in (nn::ScaledStdConv2d does that conversion).
// requires: w a CPU f32/f64 or CUDA f32 tensor of rank >= 2 [C_out, ...]; gain undefined (= 1) or C_out elements
//   of w's dtype (e.g. timm's [C_out, 1, 1, 1]); gamma finite; eps >= 0 (eps = 0 with a constant row divides by 0).
// ensures: a new contiguous tensor of w's shape; records dL/dw (through the mean and the variance) and
//   dL/dgain (shaped as gain) when they require grad.
inline Tensor scaled_std_weight(const Tensor& w, const Tensor& gain, double gamma, double eps) {
  profiler::Scope profile_scope_("scaled_std_weight");
  const char* op = "scaled_std_weight";
  detail::check_floating_input(w, op, "weight");
  ARCLIGHT_CHECK(w.dim() >= 2, op, "expected a weight of rank >= 2 [C_out, C_in/groups, ...], got ", w.str());
  ARCLIGHT_CHECK(std::isfinite(gamma), op, "gamma must be finite, got ", gamma);
  ARCLIGHT_CHECK(std::isfinite(eps) && eps >= 0.0, op, "eps must be finite and >= 0, got ", eps);
  const std::int64_t c_out = w.shape()[0];
  ARCLIGHT_CHECK(c_out > 0 && w.numel() > 0, op, "expected a non-empty weight, got ", w.str());
  const std::int64_t fan_in = w.numel() / c_out;
  detail::check_optional_vector(gain, c_out, w.dtype(), op, "gain", w.device());
  const Tensor wc = detail::dense_detached(w), gc = detail::dense_detached(gain);
  const Device dev = w.device();
  Tensor w_hat = empty(w.shape(), w.dtype(), dev);
  if (dev.is_cuda()) {
    cuda::detail::ws_forward(c_out, fan_in, wc, gc, gamma, eps, w_hat);
  } else {
    dispatch_floating(w.dtype(), op, [&]<typename T>() {
      kernels::cpu::ws_forward<T>(wc.data_ptr<T>(), detail::ptr_or_null<T>(gc), T(gamma), T(eps), c_out, fan_in,
                                  w_hat.data_ptr<T>());
    });
  }
  const bool need_w = w.requires_grad(), need_g = gain.defined() && gain.requires_grad();
  autograd::record(op, {w, gain}, w_hat, [wc, gc, gamma, eps, c_out, fan_in, need_w, need_g](const std::vector<Tensor>& g) {
    const Tensor gy = detail::dense_detached(g[0]);
    // The kernel always writes d_w; it is dropped when w needs no gradient.
    Tensor gw = empty(wc.shape(), wc.dtype(), wc.device());
    Tensor gg = need_g ? empty(gc.shape(), gc.dtype(), gc.device()) : Tensor();
    if (wc.device().is_cuda()) {
      cuda::detail::ws_backward(c_out, fan_in, wc, gc, gamma, eps, gy, gw, gg);
      return std::vector<Tensor>{need_w ? gw : Tensor(), gg};
    }
    dispatch_floating(wc.dtype(), "scaled_std_weight_backward", [&]<typename T>() {
      kernels::cpu::ws_backward<T>(wc.data_ptr<T>(), detail::ptr_or_null<T>(gc), T(gamma), T(eps), c_out, fan_in,
                                   gy.data_ptr<T>(), gw.data_ptr<T>(), detail::ptr_or_null<T>(gg));
    });
    return std::vector<Tensor>{need_w ? gw : Tensor(), gg};
  });
  return w_hat;
}

}  // namespace arclight::ops
