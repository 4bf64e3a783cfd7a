// Differentiable pointwise activations of the conv blocks — ReLU, SiLU, GELU (erf form), Sigmoid, PReLU —
// and the squeeze-excite gate multiply se_scale(x, gate). Each op checks its tensors, makes the input
// contiguous, calls the raw-pointer kernels of kernels/cpu/activation.hpp / squeeze_excite.hpp (scalar math
// shared with CUDA in kernels/common/activation_math.hpp) and records a backward that calls the matching
// backward kernel. The backward closures are first-order only (no double backward), like every kernel op.
//
// This header also holds the small helpers every conv-block op header (conv2d, batch_norm, pooling,
// dropout) shares: contiguous detached inputs and the floating/CPU/dtype checks with uniform messages.
#pragma once

#include <string>
#include <vector>

#include "arclight/ops/common.hpp"
#include "arclight/ops/elementwise.hpp"
#include "arclight/ops/view.hpp"
#include "arclight/cuda/layer_ops.hpp"
#include "kernels/common/activation_math.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/squeeze_excite.hpp"

namespace arclight::ops {

using kernels::Activation;

namespace detail {

// t itself (detached) when contiguous, else a contiguous copy; undefined stays undefined. What a kernel reads.
inline Tensor dense_detached(const Tensor& t) {
  if (!t.defined()) return Tensor();
  return t.is_contiguous() ? t.detach() : arclight::detail::copy_contiguous(t);
}

// requires: t defined, on the CPU, f32 or f64. `what` names the argument in the message.
inline void check_floating_cpu(const Tensor& t, const char* op, const char* what) {
  ARCLIGHT_CHECK(t.defined(), op, "expected a defined ", what, ", got an undefined tensor");
  check_cpu(t, op);
  ARCLIGHT_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, op, "expected ", what,
                 " of dtype f32 or f64, got ", t.str());
}

// requires: t defined; on the CPU of dtype f32 or f64, or on a CUDA device of dtype f32 (the ops with a device
// path: their device kernels compute in float32).
inline void check_floating_input(const Tensor& t, const char* op, const char* what) {
  ARCLIGHT_CHECK(t.defined(), op, "expected a defined ", what, ", got an undefined tensor");
  if (t.device().is_cuda()) {
    cuda::detail::check_f32(t, op, what);
    return;
  }
  check_floating_cpu(t, op, what);
}

// requires: t undefined, or a tensor of `dtype` holding exactly `n` elements (any shape) on `device`.
inline void check_optional_vector(const Tensor& t, std::int64_t n, DType dtype, const char* op, const char* what,
                                  Device device = Device::cpu()) {
  if (!t.defined()) return;
  cuda::detail::check_device(t, device, op, what);
  ARCLIGHT_CHECK(t.numel() == n, op, "expected ", what, " with ", n, " elements (one per channel), got ", t.str());
  ARCLIGHT_CHECK(t.dtype() == dtype, op, "expected ", what, " of dtype ", dtype_name(dtype), " (as the input), got ",
                 t.str());
}

template <typename T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace detail

// activation: y = act(x) elementwise for act in {Identity, ReLU, SiLU, GELU (erf), Sigmoid}.
// requires: x a CPU f32/f64 or CUDA f32 tensor of any shape (contiguous or not).
// ensures: a new contiguous tensor of x's shape (Identity returns x itself); records dL/dx = dy·act'(x)
//   (ReLU's derivative at 0 is 0, as PyTorch).
inline Tensor activation(const Tensor& x, Activation act) {
  const char* op = kernels::cpu::activation_name(act);
  profiler::Scope profile_scope_(op);
  detail::check_floating_input(x, op, "input");
  if (act == Activation::Identity) return x;
  const Tensor xc = detail::dense_detached(x);
  Tensor y = empty(x.shape(), x.dtype(), x.device());
  if (x.device().is_cuda()) {
    cuda::detail::activation_forward(act, xc, y);
  } else {
    dispatch_floating(x.dtype(), op, [&]<typename T>() {
      kernels::cpu::activation_forward<T>(act, xc.data_ptr<T>(), y.data_ptr<T>(), xc.numel());
    });
  }
  autograd::record(op, {x}, y, [xc, act](const std::vector<Tensor>& g) {
    const Tensor gy = detail::dense_detached(g[0]);
    Tensor gx = empty(xc.shape(), xc.dtype(), xc.device());
    if (xc.device().is_cuda()) {
      cuda::detail::activation_backward(act, xc, gy, gx);
      return std::vector<Tensor>{gx};
    }
    dispatch_floating(xc.dtype(), "activation_backward", [&]<typename T>() {
      kernels::cpu::activation_backward<T>(act, xc.data_ptr<T>(), gy.data_ptr<T>(), gx.data_ptr<T>(), xc.numel());
    });
    return std::vector<Tensor>{gx};
  });
  return y;
}

// relu(x) = max(x, 0). See activation().
inline Tensor relu(const Tensor& x) { return activation(x, Activation::ReLU); }
// silu(x) = x·sigmoid(x) (swish). See activation().
inline Tensor silu(const Tensor& x) { return activation(x, Activation::SiLU); }
// gelu(x) = ½x(1 + erf(x/√2)), PyTorch's exact form (approximate='none'). See activation().
inline Tensor gelu(const Tensor& x) { return activation(x, Activation::GELU); }
// sigmoid(x) = 1/(1 + e^−x), overflow-free for any x. See activation().
inline Tensor sigmoid(const Tensor& x) { return activation(x, Activation::Sigmoid); }

// prelu: y = x where x > 0, a_c·x otherwise, as torch.nn.functional.prelu.
// requires: x a CPU f32/f64 tensor of rank >= 1 ([N, C, ...]; the channel dim is dim 1, a rank-1 input has
//   none); weight of x's dtype holding 1 element (shared slope) or C elements (one per channel).
// ensures: a new contiguous tensor of x's shape; records dL/dx = dy·(x > 0 ? 1 : a) and
//   dL/dweight = Σ dy·(x > 0 ? 0 : x) per slope, shaped as weight.
inline Tensor prelu(const Tensor& x, const Tensor& weight) {
  profiler::Scope profile_scope_("prelu");
  const char* op = "prelu";
  detail::check_floating_cpu(x, op, "input");
  detail::check_floating_cpu(weight, op, "weight");
  detail::check_same_dtype(x, weight, op);
  const kernels::cpu::PReluShape s = kernels::cpu::make_prelu_shape(x.shape(), weight.numel(), op);
  const Tensor xc = detail::dense_detached(x), wc = detail::dense_detached(weight);
  Tensor y = empty(x.shape(), x.dtype());
  dispatch_floating(x.dtype(), op, [&]<typename T>() {
    kernels::cpu::prelu_forward<T>(s, xc.data_ptr<T>(), wc.data_ptr<T>(), y.data_ptr<T>());
  });
  const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
  autograd::record(op, {x, weight}, y, [xc, wc, s, need_x, need_w](const std::vector<Tensor>& g) {
    const Tensor gy = detail::dense_detached(g[0]);
    Tensor gx = need_x ? empty(xc.shape(), xc.dtype()) : Tensor();
    Tensor gw = need_w ? empty(wc.shape(), wc.dtype()) : Tensor();
    dispatch_floating(xc.dtype(), "prelu_backward", [&]<typename T>() {
      kernels::cpu::prelu_backward<T>(s, xc.data_ptr<T>(), wc.data_ptr<T>(), gy.data_ptr<T>(),
                                      detail::ptr_or_null<T>(gx), detail::ptr_or_null<T>(gw));
    });
    return std::vector<Tensor>{gx, gw};
  });
  return y;
}

// se_scale: y[n, c, ...] = x[n, c, ...]·gate[n, c], the last step of squeeze-excite (and ECA) attention.
// requires: x a CPU f32/f64 or CUDA f32 tensor of rank >= 2 [N, C, ...]; gate of x's dtype and device shaped
//   [N, C] or [N, C, 1, ..., 1]
//   (any trailing size-1 dims, e.g. the [N, C, 1, 1] a 1x1 conv produces).
// ensures: a new contiguous tensor of x's shape; records dL/dx = dy·gate and dL/dgate[n, c] = Σ dy·x over the
//   spatial positions, shaped as gate.
inline Tensor se_scale(const Tensor& x, const Tensor& gate) {
  profiler::Scope profile_scope_("se_scale");
  const char* op = "se_scale";
  detail::check_floating_input(x, op, "input");
  detail::check_floating_input(gate, op, "gate");
  const Device dev = detail::op_device(op, {&x, &gate});
  detail::check_same_dtype(x, gate, op);
  ARCLIGHT_CHECK(x.dim() >= 2, op, "expected an input of rank >= 2 [N, C, ...], got ", x.str());
  const std::int64_t n = x.shape()[0], c = x.shape()[1];
  bool gate_ok = gate.dim() >= 2 && gate.shape()[0] == n && gate.shape()[1] == c;
  for (std::int64_t d = 2; gate_ok && d < gate.dim(); ++d) gate_ok = gate.shape()[d] == 1;
  ARCLIGHT_CHECK(gate_ok, op, "expected a gate of shape [", n, ", ", c, "] or [", n, ", ", c,
                 ", 1, ...] (one value per image and channel of input ", x.str(), "), got ", gate.str());
  const std::int64_t hw = c > 0 && n > 0 ? x.numel() / (n * c) : 0;
  const Tensor xc = detail::dense_detached(x), gc = detail::dense_detached(gate);
  Tensor y = empty(x.shape(), x.dtype(), dev);
  if (dev.is_cuda()) {
    cuda::detail::se_scale_forward(n, c, hw, xc, gc, y);
  } else {
    dispatch_floating(x.dtype(), op, [&]<typename T>() {
      kernels::cpu::se_scale_forward<T>(n, c, hw, xc.data_ptr<T>(), gc.data_ptr<T>(), y.data_ptr<T>());
    });
  }
  const bool need_x = x.requires_grad(), need_g = gate.requires_grad();
  autograd::record(op, {x, gate}, y, [xc, gc, n, c, hw, need_x, need_g](const std::vector<Tensor>& g) {
    const Tensor gy = detail::dense_detached(g[0]);
    Tensor gx = need_x ? empty(xc.shape(), xc.dtype(), xc.device()) : Tensor();
    Tensor gg = need_g ? empty(gc.shape(), gc.dtype(), gc.device()) : Tensor();
    if (xc.device().is_cuda()) {
      cuda::detail::se_scale_backward(n, c, hw, xc, gc, gy, gx, gg);
      return std::vector<Tensor>{gx, gg};
    }
    dispatch_floating(xc.dtype(), "se_scale_backward", [&]<typename T>() {
      kernels::cpu::se_scale_backward<T>(n, c, hw, xc.data_ptr<T>(), gc.data_ptr<T>(), gy.data_ptr<T>(),
                                         detail::ptr_or_null<T>(gx), detail::ptr_or_null<T>(gg));
    });
    return std::vector<Tensor>{gx, gg};
  });
  return y;
}

}  // namespace arclight::ops
