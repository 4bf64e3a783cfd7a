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
// ensures: returns a new [N, C] tensor; records a backward giving dL/dx (0 where x < eps, torch's
//   clamp_min rule) and dL/dp (p's shape), each only when that input requires grad. The backward uses
//   the value p had at forward time.
inline Tensor gem(const Tensor& x, const Tensor& p, double eps = kernels::kGemDefaultEps) {
  profiler::Scope profile_scope_("gem");
  const char* op = "gem";
  detail::check_cpu(x, op);
  detail::check_cpu(p, op);
  ARCLIGHT_CHECK(x.dim() == 4, op, "expected x of rank 4 [N, C, H, W], got ", x.str());
  ARCLIGHT_CHECK(is_floating(x.dtype()), op, "expected a floating x (f32 or f64), got ", x.str());
  ARCLIGHT_CHECK(p.numel() == 1, op, "expected p to hold exactly one value, got ", p.str());
  detail::check_same_dtype(x, p, op);
  ARCLIGHT_CHECK(x.shape()[2] * x.shape()[3] > 0, op, "expected a non-empty spatial extent H*W > 0, got ", x.str());
  const double p_value = p.item();
  const kernels::GemShape shape{x.shape()[0], x.shape()[1], x.shape()[2] * x.shape()[3]};
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
