// softmax / log_softmax along a dim (stable at logits of ±1e4), differentiable.
#pragma once

#include "arclight/ops/view.hpp"
#include "kernels/cpu/softmax.hpp"

namespace arclight::ops {

namespace detail {
inline kernels::cpu::SoftmaxShape softmax_shape(const Tensor& t, int d) {
  kernels::cpu::SoftmaxShape s;
  for (int k = 0; k < d; ++k) s.outer *= t.shape()[k];
  s.dim = t.dim() ? t.shape()[d] : 1;
  for (int k = d + 1; k < t.dim(); ++k) s.inner *= t.shape()[k];
  return s;
}

template <bool Log>
Tensor softmax_impl(const Tensor& x_in, std::int64_t dim, const char* name) {
  profiler::Scope profile_scope_(name);
  check_cpu(x_in, name);
  const int d = normalize_dim(dim, x_in.dim(), name);
  Tensor x = arclight::detail::copy_contiguous(x_in);  // private contiguous input
  Tensor y = empty(x.shape(), x.dtype());
  const auto s = softmax_shape(x, d);
  dispatch_floating(x.dtype(), name, [&]<typename T>() {
    kernels::cpu::softmax_forward<T, Log>(s, x.data_ptr<T>(), y.data_ptr<T>());
  });
  autograd::record(name, {x_in}, y, [yd = y.detach(), s, name](const std::vector<Tensor>& g) {
    Tensor gy = arclight::detail::copy_contiguous(g[0]);
    Tensor gx = empty(yd.shape(), yd.dtype());
    dispatch_floating(yd.dtype(), name, [&]<typename T>() {
      kernels::cpu::softmax_backward<T, Log>(s, yd.data_ptr<T>(), gy.data_ptr<T>(), gx.data_ptr<T>());
    });
    return std::vector<Tensor>{gx};
  });
  return y;
}
}  // namespace detail

inline Tensor softmax(const Tensor& x, std::int64_t dim) { return detail::softmax_impl<false>(x, dim, "softmax"); }
inline Tensor log_softmax(const Tensor& x, std::int64_t dim) { return detail::softmax_impl<true>(x, dim, "log_softmax"); }

}  // namespace arclight::ops
