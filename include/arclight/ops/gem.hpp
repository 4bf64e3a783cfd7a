// gem: generalised-mean (GeM) pooling over the spatial dims, y[n,c] = (mean_hw max(x, eps)^p)^(1/p), with
// a learnable exponent p (METHOD.md §2). The differentiable op of the retrieval head's pooling: it checks
// tensors, makes the input contiguous, calls kernels/cpu/gem.hpp (math shared with CUDA in
// kernels/common/gem_math.hpp) and records a backward that produces the gradients of x and of p.
#pragma once

#include "arclight/ops/detail/head_checks.hpp"
#include "kernels/cpu/gem.hpp"

namespace arclight::ops {

// gem: y = (mean over H·W of max(x, eps)^p)^(1/p), per (n, c) plane.
// requires: x floating [N, C, H, W] with H·W > 0; p a one-element tensor (any rank) of x's dtype holding a
//   finite value > 0 (the GeM module keeps p >= 1); eps > 0 (default METHOD.md's 1e-6). CPU tensors.
namespace detail {
// The device path of gem: the CUDA kernels read p on the device (no host synchronisation); the backward uses a
// device copy of p as it was at forward time.
inline Tensor gem_cuda(const kernels::GemShape& shape, const Tensor& x, const Tensor& p, double eps) {
  cuda::detail::check_f32(x, "gem", "x");
  const Tensor xc = contiguous_detached(x), pc = arclight::detail::copy_contiguous(p);
  Tensor y = empty({shape.n, shape.c}, x.dtype(), x.device());
  cuda::detail::gem_forward(shape, xc, pc, eps, y);
  const bool need_x = x.requires_grad(), need_p = p.requires_grad();
  autograd::record("gem", {x, p}, y, [xc, pc, shape, eps, need_x, need_p, p_shape = p.shape()](const std::vector<Tensor>& g) {
    const Tensor gy = contiguous_detached(g[0]);
    Tensor gx = need_x ? empty(xc.shape(), xc.dtype(), xc.device()) : Tensor();
    Tensor gp = need_p ? empty(p_shape, xc.dtype(), xc.device()) : Tensor();
    cuda::detail::gem_backward(shape, xc, gy, pc, eps, gx, gp);
    return std::vector<Tensor>{gx, gp};
  });
  return y;
}
}  // namespace detail

// ensures: returns a new [N, C] tensor; records a backward giving dL/dx (0 where x < eps, torch's
//   clamp_min rule) and dL/dp (p's shape), each only when that input requires grad. The backward uses
//   the value p had at forward time.
inline Tensor gem(const Tensor& x, const Tensor& p, double eps = kernels::kGemDefaultEps) {
  profiler::Scope profile_scope_("gem");
  const char* op = "gem";
  const Device dev = detail::op_device(op, {&x, &p});
  ARCLIGHT_CHECK(x.dim() == 4, op, "expected x of rank 4 [N, C, H, W], got ", x.str());
  ARCLIGHT_CHECK(is_floating(x.dtype()), op, "expected a floating x (f32 or f64), got ", x.str());
  ARCLIGHT_CHECK(p.numel() == 1, op, "expected p to hold exactly one value, got ", p.str());
  detail::check_same_dtype(x, p, op);
  ARCLIGHT_CHECK(x.shape()[2] * x.shape()[3] > 0, op, "expected a non-empty spatial extent H*W > 0, got ", x.str());
  const kernels::GemShape shape{x.shape()[0], x.shape()[1], x.shape()[2] * x.shape()[3]};
  if (dev.is_cuda()) return detail::gem_cuda(shape, x, p, eps);
  const double p_value = p.item();
  const Tensor xc = detail::contiguous_detached(x);
  Tensor y = empty({shape.n, shape.c}, x.dtype());
  dispatch_floating(x.dtype(), op, [&]<typename T>() {
    kernels::cpu::gem_forward<T>(shape, xc.data_ptr<T>(), T(p_value), T(eps), y.data_ptr<T>());
  });
  const bool need_x = x.requires_grad(), need_p = p.requires_grad();
  autograd::record(op, {x, p}, y, [xc, shape, p_value, eps, need_x, need_p, p_shape = p.shape()](
                                      const std::vector<Tensor>& g) {
    const Tensor gy = detail::contiguous_detached(g[0]);
    Tensor gx = need_x ? empty(xc.shape(), xc.dtype()) : Tensor();
    Tensor gp = need_p ? empty(p_shape, xc.dtype()) : Tensor();
    dispatch_floating(xc.dtype(), "gem_backward", [&]<typename T>() {
      T gp_value = T(0);
      kernels::cpu::gem_backward<T>(shape, xc.data_ptr<T>(), gy.data_ptr<T>(), T(p_value), T(eps),
                                    need_x ? gx.data_ptr<T>() : nullptr, need_p ? &gp_value : nullptr);
      if (need_p) *gp.data_ptr<T>() = gp_value;
    });
    return std::vector<Tensor>{gx, gp};
  });
  return y;
}

}  // namespace arclight::ops
