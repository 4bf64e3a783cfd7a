// L2 norm and L2 normalisation along a dim. norm has its own backward (x/‖x‖, with the subgradient 0 at
// ‖x‖ = 0 so an all-zero slice gives a zero gradient, not NaN); l2_normalize is x / max(‖x‖₂, eps) as
// torch.nn.functional.normalize, composed from differentiable ops.
#pragma once

#include "arclight/ops/elementwise.hpp"

namespace arclight::ops {

// ‖x‖₂ over dims (all when empty). Differentiable.
inline Tensor norm(const Tensor& x, const std::vector<std::int64_t>& dims = {}, bool keepdim = false) {
  profiler::Scope profile_scope_("norm");
  Tensor y;
  {
    NoGradGuard ng;
    y = sqrt(sum(mul(x, x), dims, keepdim));
  }
  const auto nd = detail::normalize_dims(dims, x.dim(), "norm");
  autograd::record("norm", {x}, y, [xd = x.detach(), yd = y.detach(), nd, keepdim](const std::vector<Tensor>& g) {
    const Shape& s = xd.shape();
    Tensor ye = expand(detail::unsqueeze_reduced(yd, s, nd, keepdim), s);
    Tensor ge = expand(detail::unsqueeze_reduced(g[0], s, nd, keepdim), s);
    Tensor safe = where(gt(ye, 0.0), ye, ones({}, ye.dtype(), ye.device()));
    Tensor r = mul(ge, div(xd, safe));
    return std::vector<Tensor>{where(gt(ye, 0.0), r, zeros({}, r.dtype(), r.device()))};
  });
  return y;
}

// x / max(‖x‖₂ along dim, eps). requires: floating dtype; eps > 0.
inline Tensor l2_normalize(const Tensor& x, std::int64_t dim = -1, double eps = 1e-12) {
  profiler::Scope profile_scope_("l2_normalize");
  ARCLIGHT_CHECK(eps > 0, "l2_normalize", "eps must be positive, got ", eps);
  return div(x, clamp_min(norm(x, {dim}, true), eps));
}

}  // namespace arclight::ops
