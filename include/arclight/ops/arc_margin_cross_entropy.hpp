// arc_margin_cross_entropy: the fused training loss of the head, cross_entropy(arc_margin(cos, labels), labels)
// in one op. When the graph is recorded, the forward computes the loss and d(loss)/d(cos) in the same pass
// over each row (kernels/cpu/arc_margin_cross_entropy.hpp): neither the [N, classes] logits nor their
// gradient is ever materialised, and the backward only scales the saved gradient by the upstream one
// (d loss/d cos is linear in it). Without recording (evaluation) only the loss is computed. The numbers
// equal the composed ops arc_margin → cross_entropy (tests/head checks values and gradients).
#pragma once

#include <vector>

#include "arclight/ops/arc_margin.hpp"
#include "arclight/ops/cross_entropy.hpp"
#include "kernels/cpu/arc_margin_cross_entropy.hpp"

namespace arclight::ops {

// arc_margin_cross_entropy: loss of the margin logits of cos against labels.
// requires: the union of arc_margin's and cross_entropy's requirements (cos [N, classes·sub_centers],
//   labels i64 [N], class_weights / class_margins undefined or [classes] of cos's dtype; constants).
// ensures: returns [N] (reduction none) or a 0-d loss; records a backward to cos. When recording, holds one
//   [N, classes·sub_centers] gradient tensor between forward and backward (the composed path holds the
//   logits, then the logits' gradient and the cosine gradient).
inline Tensor arc_margin_cross_entropy(const Tensor& cos, const Tensor& labels, const ArcMarginConfig& arc,
                                       const CrossEntropyConfig& ce = {}, const Tensor& class_weights = Tensor(),
                                       const Tensor& class_margins = Tensor()) {
  profiler::Scope profile_scope_("arc_margin_cross_entropy");
  const char* op = "arc_margin_cross_entropy";
  const auto s = detail::arc_margin_shape(cos, labels, arc, class_margins, op, /*allow_cuda=*/true);
  detail::check_class_vector(class_weights, s.classes, cos.dtype(), "class weights", op);
  const Device dev = cos.device();
  cuda::detail::check_device(class_weights, dev, op, "class weights");
  const Tensor cc = detail::contiguous_detached(cos), yc = detail::contiguous_detached(labels),
               mc = detail::contiguous_detached(class_margins), wc = detail::contiguous_detached(class_weights);
  const bool recording = autograd::needs_record({&cos});
  Tensor loss = empty(detail::loss_shape(ce.reduction, s.n), cos.dtype(), dev);
  Tensor grad = recording && dev.is_cpu() ? empty(cc.shape(), cc.dtype()) : Tensor();
  if (dev.is_cuda()) {
    // On the device the forward only reads cos; the backward recomputes the row softmax from cos with the upstream
    // gradient read on the device: three passes over [N, classes] (read; read + write) instead of the four of
    // saving d loss/d cos (read + write; read + write for the upstream scale).
    cuda::detail::arc_margin_cross_entropy_forward(s, arc.kernel(), ce, cc, yc, mc, wc, loss, Tensor());
    if (!recording) return loss;
    autograd::record(op, {cos}, loss, [cc, yc, mc, wc, s, k = arc.kernel(), ce](const std::vector<Tensor>& g) {
      Tensor gcos = empty(cc.shape(), cc.dtype(), cc.device());
      cuda::detail::arc_margin_cross_entropy_backward(s, k, ce, cc, yc, mc, wc, detail::contiguous_detached(g[0]), gcos);
      return std::vector<Tensor>{gcos};
    });
    return loss;
  } else {
    dispatch_floating(cos.dtype(), op, [&]<typename T>() {
      kernels::cpu::arc_margin_cross_entropy_forward<T>(
          s, arc.kernel(), ce, cc.data_ptr<T>(), yc.data_ptr<std::int64_t>(), detail::optional_ptr<T>(mc),
          detail::optional_ptr<T>(wc), loss.data_ptr<T>(), recording ? grad.data_ptr<T>() : nullptr);
    });
  }
  if (!recording) return loss;
  autograd::record(op, {cos}, loss, [grad, s, reduction = ce.reduction](const std::vector<Tensor>& g) {
    // grad holds d loss/d cos for a unit upstream gradient; scale row i by g[i] (none) or all by g[0].
    const std::vector<double> up = g[0].to_vector<double>();
    bool unit = true;
    for (double v : up) unit = unit && v == 1.0;
    if (unit) return std::vector<Tensor>{grad};  // the usual loss.backward(): no extra pass
    Tensor out = empty(grad.shape(), grad.dtype());
    const std::int64_t row = s.classes * s.sub_centers;
    dispatch_floating(grad.dtype(), "arc_margin_cross_entropy_backward", [&]<typename T>() {
      const T* src = grad.data_ptr<T>();
      T* dst = out.data_ptr<T>();
      parallel_for(0, s.n, 16, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i) {
          const T f = T(reduction == Reduction::kNone ? up[std::size_t(i)] : up[0]);
          for (std::int64_t j = 0; j < row; ++j) dst[i * row + j] = f * src[i * row + j];
        }
      });
    });
    return std::vector<Tensor>{out};
  });
  return loss;
}

}  // namespace arclight::ops
