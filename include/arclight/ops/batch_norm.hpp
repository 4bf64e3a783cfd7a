// Differentiable batch normalisation over [N, C], [N, C, L] or [N, C, H, W] inputs with PyTorch semantics,
// optionally fused with a pointwise activation (BN+act, as timm's BatchNormAct2d). Train mode normalises with
// the batch statistics (biased variance) and updates the running statistics in place with momentum and the
// UNBIASED variance; eval mode normalises with the running statistics. The math is in
// kernels/cpu/batch_norm.hpp; this op validates, makes inputs contiguous, dispatches and records a backward
// through the batch statistics (train) or through the constant running statistics (eval).
#pragma once

#include <cmath>
#include <vector>

#include "arclight/ops/activation.hpp"
#include "kernels/cpu/batch_norm.hpp"

namespace arclight::ops {

namespace detail {
// The gradient buffers of a batch-norm backward, {dL/dx, dL/dweight, dL/dbias} beside their inputs (undefined
// where no gradient is needed): what all four backward closures below fill.
inline std::vector<Tensor> batch_norm_grad_buffers(const Tensor& xc, const Tensor& wc, const Tensor& bc, bool need_x,
                                                   bool need_w, bool need_b) {
  const Device d = xc.device();
  return {need_x ? empty(xc.shape(), xc.dtype(), d) : Tensor(), need_w ? empty(wc.shape(), wc.dtype(), d) : Tensor(),
          need_b ? empty(bc.shape(), bc.dtype(), d) : Tensor()};
}

// The device path of batch_norm (arguments already validated; xc, wc, bc contiguous detached aliases; x, weight,
// bias the graph inputs): the same semantics through kernels/cuda/conv_blocks.cuh.
inline Tensor batch_norm_cuda(const kernels::cpu::BatchNormShape& s, const Tensor& xc, const Tensor& wc,
                              const Tensor& bc, const Tensor& running_mean, const Tensor& running_var, bool training,
                              double momentum, double eps, Activation act, Tensor y, const Tensor& x,
                              const Tensor& weight, const Tensor& bias) {
  const cuda::detail::BatchNormArgs a{s.n, s.c, s.inner, eps, momentum, act};
  const bool need_x = x.requires_grad(), need_w = weight.defined() && weight.requires_grad(),
             need_b = bias.defined() && bias.requires_grad();
  const Device dev = xc.device();
  if (training || !running_mean.defined()) {
    Tensor save_mean = empty({s.c}, xc.dtype(), dev), save_invstd = empty({s.c}, xc.dtype(), dev);
    cuda::detail::batch_norm_forward_train(a, xc, wc, bc, training ? running_mean : Tensor(),
                                           training ? running_var : Tensor(), y, save_mean, save_invstd);
    autograd::record("batch_norm", {x, weight, bias}, y,
                     [a, xc, wc, bc, save_mean, save_invstd, need_x, need_w, need_b](const std::vector<Tensor>& g) {
                       auto out = batch_norm_grad_buffers(xc, wc, bc, need_x, need_w, need_b);
                       cuda::detail::batch_norm_backward_train(a, xc, dense_detached(g[0]), wc, bc, save_mean,
                                                               save_invstd, out[0], out[1], out[2]);
                       return out;
                     });
    return y;
  }
  cuda::detail::batch_norm_forward_eval(a, xc, wc, bc, running_mean, running_var, y);
  if (autograd::needs_record({&x, &weight, &bias})) {
    const Tensor rm = arclight::detail::copy_contiguous(running_mean);  // snapshot: training updates them in place
    const Tensor rv = arclight::detail::copy_contiguous(running_var);
    autograd::record("batch_norm", {x, weight, bias}, y,
                     [a, xc, wc, bc, rm, rv, need_x, need_w, need_b](const std::vector<Tensor>& g) {
                       auto out = batch_norm_grad_buffers(xc, wc, bc, need_x, need_w, need_b);
                       cuda::detail::batch_norm_backward_eval(a, xc, dense_detached(g[0]), wc, bc, rm, rv, out[0],
                                                              out[1], out[2]);
                       return out;
                     });
  }
  return y;
}
}  // namespace detail

// batch_norm: y = act((x − mean)/sqrt(var + eps)·weight + bias), per channel (dim 1).
// requires: x a CPU f32/f64 or CUDA f32 tensor of rank 2, 3 or 4 with dim 1 = C and every dim >= 1; weight and
//   bias undefined (= 1 / 0) or C elements of x's dtype and device; running_mean and running_var both undefined or both
//   contiguous C-element tensors of x's dtype that do not require grad; momentum in [0, 1]; eps >= 0; in
//   training, more than one value per channel (N·H·W > 1, PyTorch's rule). Batch statistics are used when
//   `training` or when no running statistics are given (as torch.nn.BatchNorm with
//   track_running_stats=False); eval mode with running statistics uses them.
// ensures: a new contiguous tensor of x's shape. In training with running statistics, running_mean and
//   running_var are updated IN PLACE: r = (1 − momentum)·r + momentum·batch (unbiased variance for
//   running_var). Records dL/dx (through the batch statistics in training), dL/dweight and dL/dbias (shaped
//   as weight/bias) when they require grad; eval mode's backward uses the running statistics as they were at
//   forward time.
inline Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                         const Tensor& running_var, bool training, double momentum, double eps,
                         Activation act = Activation::Identity) {
  profiler::Scope profile_scope_("batch_norm");
  const char* op = "batch_norm";
  detail::check_floating_input(x, op, "input");
  const Device dev = x.device();
  ARCLIGHT_CHECK(x.dim() >= 2, op, "expected an input of rank 2 [N, C], 3 [N, C, L] or 4 [N, C, H, W], got ",
                 x.str());
  // The layer's channel count: from its parameters or statistics when given, so a mismatching input is named.
  const std::int64_t channels = weight.defined()         ? weight.numel()
                                : running_mean.defined() ? running_mean.numel()
                                                         : x.shape()[1];
  const kernels::cpu::BatchNormShape s = kernels::cpu::make_batch_norm_shape(x.shape(), channels, op);
  detail::check_optional_vector(weight, s.c, x.dtype(), op, "weight", dev);
  detail::check_optional_vector(bias, s.c, x.dtype(), op, "bias", dev);
  ARCLIGHT_CHECK(running_mean.defined() == running_var.defined(), op,
                 "running_mean and running_var must be given together (both or neither)");
  const bool have_running = running_mean.defined();
  if (have_running) {
    detail::check_optional_vector(running_mean, s.c, x.dtype(), op, "running_mean", dev);
    detail::check_optional_vector(running_var, s.c, x.dtype(), op, "running_var", dev);
    ARCLIGHT_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(), op,
                   "running statistics are updated in place and must be contiguous, got ", running_mean.str(), " and ",
                   running_var.str());
    ARCLIGHT_CHECK(!running_mean.requires_grad() && !running_var.requires_grad(), op,
                   "running statistics are buffers and must not require grad");
  }
  ARCLIGHT_CHECK(std::isfinite(momentum) && momentum >= 0.0 && momentum <= 1.0, op, "momentum must be in [0, 1], got ",
                 momentum);
  ARCLIGHT_CHECK(std::isfinite(eps) && eps >= 0.0, op, "eps must be finite and >= 0, got ", eps);
  const bool use_batch_stats = training || !have_running;
  ARCLIGHT_CHECK(!use_batch_stats || s.per_channel() > 1, op,
                 "expected more than 1 value per channel when training, got input ", x.str());

  const Tensor xc = detail::dense_detached(x), wc = detail::dense_detached(weight), bc = detail::dense_detached(bias);
  Tensor y = empty(x.shape(), x.dtype(), dev);
  const bool need_x = x.requires_grad();
  const bool need_w = weight.defined() && weight.requires_grad();
  const bool need_b = bias.defined() && bias.requires_grad();
  if (dev.is_cuda()) return detail::batch_norm_cuda(s, xc, wc, bc, running_mean, running_var, training, momentum, eps, act,
                                                   y, x, weight, bias);

  if (use_batch_stats) {
    Tensor save_mean = empty({s.c}, x.dtype()), save_invstd = empty({s.c}, x.dtype());
    dispatch_floating(x.dtype(), op, [&]<typename T>() {
      // Running statistics are only touched in training (eval without them reaches here with none).
      T* rm = training && have_running ? running_mean.data_ptr<T>() : nullptr;
      T* rv = training && have_running ? running_var.data_ptr<T>() : nullptr;
      kernels::cpu::batch_norm_forward_train<T>(s, xc.data_ptr<T>(), detail::ptr_or_null<T>(wc),
                                                detail::ptr_or_null<T>(bc), T(eps), T(momentum), rm, rv,
                                                y.data_ptr<T>(), save_mean.data_ptr<T>(), save_invstd.data_ptr<T>(),
                                                act);
    });
    autograd::record("batch_norm", {x, weight, bias}, y,
                     [s, xc, wc, bc, save_mean, save_invstd, act, need_x, need_w, need_b](const std::vector<Tensor>& g) {
                       const Tensor gy = detail::dense_detached(g[0]);
                       auto out = detail::batch_norm_grad_buffers(xc, wc, bc, need_x, need_w, need_b);
                       Tensor &gx = out[0], &gw = out[1], &gb = out[2];
                       dispatch_floating(xc.dtype(), "batch_norm_backward", [&]<typename T>() {
                         kernels::cpu::batch_norm_backward_train<T>(
                             s, xc.data_ptr<T>(), gy.data_ptr<T>(), detail::ptr_or_null<T>(wc),
                             detail::ptr_or_null<T>(bc), save_mean.data_ptr<T>(), save_invstd.data_ptr<T>(),
                             detail::ptr_or_null<T>(gx), detail::ptr_or_null<T>(gw), detail::ptr_or_null<T>(gb), act);
                       });
                       return out;
                     });
    return y;
  }

  dispatch_floating(x.dtype(), op, [&]<typename T>() {
    kernels::cpu::batch_norm_forward_eval<T>(s, xc.data_ptr<T>(), detail::ptr_or_null<T>(wc),
                                             detail::ptr_or_null<T>(bc), T(eps), running_mean.data_ptr<T>(),
                                             running_var.data_ptr<T>(), y.data_ptr<T>(), act);
  });
  if (autograd::needs_record({&x, &weight, &bias})) {
    // Snapshot the statistics: a later training step updates the buffers in place.
    const Tensor rm = arclight::detail::copy_contiguous(running_mean);
    const Tensor rv = arclight::detail::copy_contiguous(running_var);
    autograd::record("batch_norm", {x, weight, bias}, y,
                     [s, xc, wc, bc, rm, rv, eps, act, need_x, need_w, need_b](const std::vector<Tensor>& g) {
                       const Tensor gy = detail::dense_detached(g[0]);
                       auto out = detail::batch_norm_grad_buffers(xc, wc, bc, need_x, need_w, need_b);
                       Tensor &gx = out[0], &gw = out[1], &gb = out[2];
                       dispatch_floating(xc.dtype(), "batch_norm_backward", [&]<typename T>() {
                         kernels::cpu::batch_norm_backward_eval<T>(
                             s, xc.data_ptr<T>(), gy.data_ptr<T>(), detail::ptr_or_null<T>(wc),
                             detail::ptr_or_null<T>(bc), T(eps), rm.data_ptr<T>(), rv.data_ptr<T>(),
                             detail::ptr_or_null<T>(gx), detail::ptr_or_null<T>(gw), detail::ptr_or_null<T>(gb), act);
                       });
                       return out;
                     });
  }
  return y;
}

}  // namespace arclight::ops
