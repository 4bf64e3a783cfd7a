// Differentiable 2-D pooling over NCHW tensors with PyTorch semantics: average pooling (kernel, stride,
// symmetric padding, ceil_mode, count_include_pad — NFNet's transition shortcut is avg_pool2d(x, 2, 2, 0,
// true, false), timm's DownsampleAvg), max pooling (argmax saved for the backward, NaN propagating as torch)
// and global average pooling to [N, C, 1, 1] (adaptive_avg_pool2d with output size 1). Kernels:
// kernels/cpu/pooling.hpp; shape arithmetic shared with CUDA: kernels/common/conv_shape.hpp.
#pragma once

#include <vector>

#include "arclight/ops/activation.hpp"
#include "kernels/common/conv_shape.hpp"
#include "kernels/cpu/pooling.hpp"

namespace arclight::ops {

// avg_pool2d: y = the mean of each kernel x kernel window (torch.nn.functional.avg_pool2d).
// requires: x a CPU f32/f64 or CUDA f32 tensor [N, C, H, W]; kernel >= 1; stride >= 1, or <= 0 for "= kernel"
//   (torch's None); 0 <= padding <= kernel/2; an output of at least 1x1. count_include_pad: the divisor counts the
//   padded positions inside the window (torch's default) or only the input ones.
// ensures: a new contiguous [N, C, out_h, out_w] tensor (torch's output size rule, incl. ceil_mode's "a last
//   window starting in the right pad is dropped"); records dL/dx.
inline Tensor avg_pool2d(const Tensor& x, std::int64_t kernel, std::int64_t stride = -1, std::int64_t padding = 0,
                         bool ceil_mode = false, bool count_include_pad = true) {
  profiler::Scope profile_scope_("avg_pool2d");
  const char* op = "avg_pool2d";
  detail::check_floating_input(x, op, "input");
  const kernels::Pool2dShape s =
      kernels::cpu::make_pool2d_shape(x.shape(), kernel, kernel, stride, stride, padding, padding, ceil_mode, op);
  const Tensor xc = detail::dense_detached(x);
  const Device dev = x.device();
  Tensor y = empty({s.n, s.c, s.out_h, s.out_w}, x.dtype(), dev);
  if (dev.is_cuda()) {
    cuda::detail::avg_pool2d_forward(s, xc, y, count_include_pad);
  } else {
    dispatch_floating(x.dtype(), op, [&]<typename T>() {
      kernels::cpu::avg_pool2d_forward<T>(s, xc.data_ptr<T>(), y.data_ptr<T>(), count_include_pad);
    });
  }
  autograd::record(op, {x}, y, [s, count_include_pad, dev, dt = x.dtype()](const std::vector<Tensor>& g) {
    const Tensor gy = detail::dense_detached(g[0]);
    Tensor gx = empty({s.n, s.c, s.h, s.w}, dt, dev);
    if (dev.is_cuda()) {
      cuda::detail::avg_pool2d_backward(s, gy, gx, count_include_pad);
      return std::vector<Tensor>{gx};
    }
    dispatch_floating(dt, "avg_pool2d_backward", [&]<typename T>() {
      kernels::cpu::avg_pool2d_backward<T>(s, gy.data_ptr<T>(), gx.data_ptr<T>(), count_include_pad);
    });
    return std::vector<Tensor>{gx};
  });
  return y;
}

// max_pool2d: y = the max of each window, padding acting as −inf (torch.nn.functional.max_pool2d, dilation 1).
// requires: as avg_pool2d.
// ensures: a new contiguous [N, C, out_h, out_w] tensor (a window holding NaN gives NaN); records dL/dx, which
//   routes each output's gradient to its window's first maximum (row-major), as torch.
inline Tensor max_pool2d(const Tensor& x, std::int64_t kernel, std::int64_t stride = -1, std::int64_t padding = 0,
                         bool ceil_mode = false) {
  profiler::Scope profile_scope_("max_pool2d");
  const char* op = "max_pool2d";
  detail::check_floating_input(x, op, "input");
  const kernels::Pool2dShape s =
      kernels::cpu::make_pool2d_shape(x.shape(), kernel, kernel, stride, stride, padding, padding, ceil_mode, op);
  const Tensor xc = detail::dense_detached(x);
  const Device dev = x.device();
  Tensor y = empty({s.n, s.c, s.out_h, s.out_w}, x.dtype(), dev);
  const bool record = autograd::needs_record({&x});
  Tensor indices = record ? empty(y.shape(), DType::i64, dev) : Tensor();
  if (dev.is_cuda()) {
    cuda::detail::max_pool2d_forward(s, xc, y, indices);
  } else {
    dispatch_floating(x.dtype(), op, [&]<typename T>() {
      kernels::cpu::max_pool2d_forward<T>(s, xc.data_ptr<T>(), y.data_ptr<T>(),
                                          record ? indices.data_ptr<std::int64_t>() : nullptr);
    });
  }
  autograd::record(op, {x}, y, [s, indices, dev, dt = x.dtype()](const std::vector<Tensor>& g) {
    const Tensor gy = detail::dense_detached(g[0]);
    Tensor gx = empty({s.n, s.c, s.h, s.w}, dt, dev);
    if (dev.is_cuda()) {
      cuda::detail::max_pool2d_backward(s, gy, indices, gx);
      return std::vector<Tensor>{gx};
    }
    dispatch_floating(dt, "max_pool2d_backward", [&]<typename T>() {
      kernels::cpu::max_pool2d_backward<T>(s, gy.data_ptr<T>(), indices.data_ptr<std::int64_t>(), gx.data_ptr<T>());
    });
    return std::vector<Tensor>{gx};
  });
  return y;
}

// global_avg_pool: y[n, c, 0, 0] = mean over H·W of x[n, c] (adaptive_avg_pool2d(x, 1); SE's squeeze).
// requires: x a CPU f32/f64 or CUDA f32 tensor [N, C, H, W] with every dim >= 1.
// ensures: a new contiguous [N, C, 1, 1] tensor (CPU sums in double); records dL/dx = dy/(H·W) broadcast.
inline Tensor global_avg_pool(const Tensor& x) {
  profiler::Scope profile_scope_("global_avg_pool");
  const char* op = "global_avg_pool";
  detail::check_floating_input(x, op, "input");
  ARCLIGHT_CHECK(x.dim() == 4, op, "expected an input of rank 4 [N, C, H, W], got ", x.str());
  const std::int64_t n = x.shape()[0], c = x.shape()[1], hw = x.shape()[2] * x.shape()[3];
  ARCLIGHT_CHECK(n >= 1 && c >= 1 && hw >= 1, op, "expected every dimension >= 1, got ", x.str());
  const Tensor xc = detail::dense_detached(x);
  const Device dev = x.device();
  Tensor y = empty({n, c, 1, 1}, x.dtype(), dev);
  if (dev.is_cuda()) {
    cuda::detail::global_avg_pool_forward(n * c, hw, xc, y);
  } else {
    dispatch_floating(x.dtype(), op, [&]<typename T>() {
      kernels::cpu::global_avg_pool_forward<T>(n, c, hw, xc.data_ptr<T>(), y.data_ptr<T>());
    });
  }
  autograd::record(op, {x}, y, [n, c, hw, dev, in_shape = x.shape(), dt = x.dtype()](const std::vector<Tensor>& g) {
    const Tensor gy = detail::dense_detached(g[0]);
    Tensor gx = empty(in_shape, dt, dev);
    if (dev.is_cuda()) {
      cuda::detail::global_avg_pool_backward(n * c, hw, gy, gx);
      return std::vector<Tensor>{gx};
    }
    dispatch_floating(dt, "global_avg_pool_backward", [&]<typename T>() {
      kernels::cpu::global_avg_pool_backward<T>(n, c, hw, gy.data_ptr<T>(), gx.data_ptr<T>());
    });
    return std::vector<Tensor>{gx};
  });
  return y;
}

// adaptive_avg_pool2d: torch.nn.functional.adaptive_avg_pool2d for the output size the models use, 1x1
// (= global_avg_pool). requires: output_size == 1 (other sizes throw: not implemented); x as global_avg_pool.
inline Tensor adaptive_avg_pool2d(const Tensor& x, std::int64_t output_size = 1) {
  profiler::Scope profile_scope_("adaptive_avg_pool2d");
  ARCLIGHT_CHECK(output_size == 1, "adaptive_avg_pool2d", "only output size 1 (global average pooling) is supported, got ",
                 output_size);
  return global_avg_pool(x);
}

}  // namespace arclight::ops
