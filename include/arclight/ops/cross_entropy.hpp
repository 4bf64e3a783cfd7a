// cross_entropy: fused log-softmax + label-smoothing cross-entropy with optional per-class weights and
// none/mean/sum reduction, with exactly torch.nn.functional.cross_entropy(logits, labels, weight=w,
// label_smoothing=ε, reduction=r) semantics (METHOD.md §5; the formulas are spelled out in
// kernels/common/softmax_math.hpp). Stable for logits of ±1e4. Dispatches to kernels/cpu/cross_entropy.hpp.
#pragma once

#include "arclight/ops/detail/head_checks.hpp"
#include "kernels/cpu/cross_entropy.hpp"

namespace arclight::ops {

using Reduction = kernels::Reduction;
// { label_smoothing ε in [0, 1] (default 0), reduction (default mean) }.
using CrossEntropyConfig = kernels::CrossEntropyConfig;

namespace detail {
inline Shape loss_shape(Reduction r, std::int64_t n) { return r == Reduction::kNone ? Shape{n} : Shape{}; }
}  // namespace detail

// cross_entropy: loss of logits [N, K] against labels.
// requires: logits floating [N, K] (K > 0); labels i64 [N] in [0, K); weight undefined or [K] of the logits'
//   dtype, finite and >= 0 (a constant: no gradient flows to it); ε in [0, 1]; for mean with weights the
//   batch's target weights must not all be 0. Else arclight::Error.
// ensures: returns a new tensor: [N] for reduction none, a 0-d scalar for mean and sum (mean over no rows is
//   NaN, as torch); records a backward to logits: g·(A_i·softmax − a_i) per row (p − q without weights).
inline Tensor cross_entropy(const Tensor& logits, const Tensor& labels, const CrossEntropyConfig& cfg = {},
                            const Tensor& weight = Tensor()) {
  profiler::Scope profile_scope_("cross_entropy");
  const char* op = "cross_entropy";
  detail::check_cpu(logits, op);
  detail::check_cpu(labels, op);
  cuda::detail::check_device(weight, Device::cpu(), op, "class weights");
  ARCLIGHT_CHECK(is_floating(logits.dtype()), op, "expected floating logits (f32 or f64), got ", logits.str());
  ARCLIGHT_CHECK(logits.dim() == 2, op, "expected logits of rank 2 [N, classes], got ", logits.str());
  ARCLIGHT_CHECK(logits.shape()[1] > 0, op, "expected at least one class, got logits ", logits.str());
  const kernels::CrossEntropyShape s{logits.shape()[0], logits.shape()[1]};
  detail::check_labels(labels, s.n, op);
  detail::check_class_vector(weight, s.classes, logits.dtype(), "class weights", op);
  const Tensor zc = detail::contiguous_detached(logits), yc = detail::contiguous_detached(labels),
               wc = detail::contiguous_detached(weight);
  Tensor loss = empty(detail::loss_shape(cfg.reduction, s.n), logits.dtype());
  dispatch_floating(logits.dtype(), op, [&]<typename T>() {
    kernels::cpu::cross_entropy_forward<T>(s, cfg, zc.data_ptr<T>(), yc.data_ptr<std::int64_t>(),
                                           detail::optional_ptr<T>(wc), loss.data_ptr<T>());
  });
  autograd::record(op, {logits}, loss, [zc, yc, wc, s, cfg](const std::vector<Tensor>& g) {
    const Tensor gl = detail::contiguous_detached(g[0]);
    Tensor gz = empty(zc.shape(), zc.dtype());
    dispatch_floating(zc.dtype(), "cross_entropy_backward", [&]<typename T>() {
      kernels::cpu::cross_entropy_backward<T>(s, cfg, zc.data_ptr<T>(), yc.data_ptr<std::int64_t>(),
                                              detail::optional_ptr<T>(wc), gl.data_ptr<T>(), gz.data_ptr<T>());
    });
    return std::vector<Tensor>{gz};
  });
  return loss;
}

}  // namespace arclight::ops
