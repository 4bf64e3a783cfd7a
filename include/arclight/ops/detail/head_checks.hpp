// Argument checks shared by the retrieval-head ops (ops/arc_margin.hpp, ops/cross_entropy.hpp,
// ops/arc_margin_cross_entropy.hpp): class-label vectors, optional per-class vectors (margins, weights),
// and contiguous detached copies of the tensors a kernel reads. Messages name the op, the tensor found and
// what was expected, as every arclight::Error does.
#pragma once

#include "arclight/ops/common.hpp"
#include "arclight/ops/view.hpp"

namespace arclight::ops::detail {

// A contiguous alias (no copy) or a contiguous copy of t, detached from the graph; undefined stays undefined.
inline Tensor contiguous_detached(const Tensor& t) {
  if (!t.defined()) return Tensor();
  return t.is_contiguous() ? t.detach() : arclight::detail::copy_contiguous(t);
}

// requires: labels is an i64 tensor of shape [n] (on the op's device: the op checks that). Ranges are checked by
// the kernels (they know the class count after sub-centres; on a GPU an out-of-range label makes its row NaN).
inline void check_labels(const Tensor& labels, std::int64_t n, const char* op) {
  ARCLIGHT_CHECK(labels.defined(), op, "expected labels, got an undefined tensor");
  ARCLIGHT_CHECK(labels.dtype() == DType::i64, op, "expected labels of dtype i64, got ", labels.str());
  ARCLIGHT_CHECK(labels.dim() == 1 && labels.shape()[0] == n, op, "expected labels of shape [", n,
                 "] (one per row), got ", labels.str());
}

// requires: v undefined, or a 1-D tensor of `classes` values with dtype `dtype` (on the op's device). `what` names it.
inline void check_class_vector(const Tensor& v, std::int64_t classes, DType dtype, const char* what, const char* op) {
  if (!v.defined()) return;
  ARCLIGHT_CHECK(v.dim() == 1 && v.shape()[0] == classes, op, "expected ", what, " of shape [", classes,
                 "] (one per class), got ", v.str());
  ARCLIGHT_CHECK(v.dtype() == dtype, op, "expected ", what, " of dtype ", dtype_name(dtype), " (as the logits), got ",
                 v.str());
}

// Raw pointer of an optional (already contiguous) tensor, or null.
template <typename T>
const T* optional_ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace arclight::ops::detail
