// Indexing ops: index_select (rows by index along a dim), gather / scatter_add (PyTorch semantics, index
// of the same rank as the source) and one_hot. Indices are i64 (i32 accepted) and range-checked before any
// kernel runs: an out-of-range index is an arclight::Error naming the op, the index and the dim size.
#pragma once

#include <vector>

#include "arclight/ops/view.hpp"

namespace arclight::ops {

namespace detail {

// Index values as i64, contiguous, range-checked against [0, limit).
inline std::vector<std::int64_t> checked_indices(const Tensor& index, std::int64_t limit, const char* op) {
  check_cpu(index, op);
  ARCLIGHT_CHECK(index.dtype() == DType::i64 || index.dtype() == DType::i32, op, "index must be i64 or i32, got ",
                 index.str());
  std::vector<std::int64_t> v = index.to_vector<std::int64_t>();
  for (std::size_t i = 0; i < v.size(); ++i)
    ARCLIGHT_CHECK(v[i] >= 0 && v[i] < limit, op, "index ", v[i], " at position ", i, " is out of range [0, ", limit, ")");
  return v;
}

// Multi-index walk over `shape` calling f(linear position, offset_a, offset_b) with element offsets
// computed from strides_a / strides_b.
template <typename F>
void walk2(const Shape& shape, const Strides& sa, std::int64_t oa, const Strides& sb, std::int64_t ob, F&& f) {
  std::int64_t n = 1;
  for (auto s : shape) n *= s;
  std::vector<std::int64_t> idx(shape.size(), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    f(i, oa, ob);
    for (std::size_t d = shape.size(); d-- > 0;) {
      oa += sa[d];
      ob += sb[d];
      if (++idx[d] < shape[d]) break;
      oa -= sa[d] * shape[d];
      ob -= sb[d] * shape[d];
      idx[d] = 0;
    }
  }
}

inline void check_gather_shapes(const Tensor& t, int d, const Tensor& index, const char* op) {
  ARCLIGHT_CHECK(index.dim() == t.dim(), op, "index ", index.str(), " must have the same rank as ", t.str());
  for (int k = 0; k < t.dim(); ++k)
    ARCLIGHT_CHECK(k == d || index.shape()[k] <= t.shape()[k], op, "index ", index.str(), " is larger than ", t.str(),
                   " in dim ", k, " (only dim ", d, " may differ)");
}

Tensor scatter_add_impl(const Tensor& self, int d, const Tensor& index, const Tensor& src);
}  // namespace detail

// out[..., i_d, ...] = t[..., index[..., i_d, ...], ...] along dim. out has index's shape. Differentiable in t.
inline Tensor gather(const Tensor& t, std::int64_t dim, const Tensor& index) {
  profiler::Scope profile_scope_("gather");
  detail::check_cpu(t, "gather");
  const int d = normalize_dim(dim, t.dim(), "gather");
  detail::check_gather_shapes(t, d, index, "gather");
  const auto idx = detail::checked_indices(index, t.dim() ? t.shape()[d] : 1, "gather");
  Tensor out = empty(index.shape(), t.dtype());
  Strides ts = t.strides();
  const std::int64_t dstride = t.dim() ? ts[d] : 0;
  if (t.dim()) ts[d] = 0;
  dispatch_all(t.dtype(), "gather", [&]<typename T>() {
    const T* src = static_cast<const T*>(t.storage()->data());
    T* dst = out.data_ptr<T>();
    detail::walk2(index.shape(), ts, t.offset(), out.strides(), 0, [&](std::int64_t i, std::int64_t ot, std::int64_t oo) {
      dst[oo] = src[ot + idx[static_cast<std::size_t>(i)] * dstride];
    });
  });
  autograd::record("gather", {t}, out, [ix = index.detach(), shape = t.shape(), d](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{detail::scatter_add_impl(zeros(shape, g[0].dtype()), d, ix, g[0])};
  });
  return out;
}

namespace detail {
inline Tensor scatter_add_impl(const Tensor& self, int d, const Tensor& index, const Tensor& src) {
  check_same_dtype(self, src, "scatter_add");
  check_gather_shapes(self, d, index, "scatter_add");
  ARCLIGHT_CHECK(src.dim() == index.dim(), "scatter_add", "src ", src.str(), " must have the rank of index ", index.str());
  for (int k = 0; k < index.dim(); ++k)
    ARCLIGHT_CHECK(index.shape()[k] <= src.shape()[k], "scatter_add", "index ", index.str(), " is larger than src ",
                   src.str(), " in dim ", k);
  const auto idx = checked_indices(index, self.dim() ? self.shape()[d] : 1, "scatter_add");
  Tensor out = arclight::detail::copy_contiguous(self);
  Strides os = out.strides();
  const std::int64_t dstride = out.dim() ? os[d] : 0;
  if (out.dim()) os[d] = 0;
  dispatch_all(self.dtype(), "scatter_add", [&]<typename T>() {
    T* dst = out.data_ptr<T>();
    const T* s = static_cast<const T*>(src.storage()->data());
    // serial: several positions may add into the same element
    walk2(index.shape(), os, 0, src.strides(), src.offset(), [&](std::int64_t i, std::int64_t oo, std::int64_t osrc) {
      dst[oo + idx[static_cast<std::size_t>(i)] * dstride] += s[osrc];
    });
  });
  return out;
}
}  // namespace detail

// A copy of self with src[pos] added at self[..., index[pos], ...] along dim for every position of index
// (repeated indices accumulate). Differentiable in self and src.
inline Tensor scatter_add(const Tensor& self, std::int64_t dim, const Tensor& index, const Tensor& src) {
  profiler::Scope profile_scope_("scatter_add");
  detail::check_cpu(self, "scatter_add");
  detail::check_cpu(src, "scatter_add");
  const int d = normalize_dim(dim, self.dim(), "scatter_add");
  Tensor out = detail::scatter_add_impl(self, d, index, src);
  autograd::record("scatter_add", {self, src}, out, [ix = index.detach(), d, ss = src.shape()](const std::vector<Tensor>& g) {
    Tensor gs = gather(g[0], d, ix);
    if (gs.shape() != ss) {  // index smaller than src: the rest of src received no gradient
      Tensor full = zeros(ss, g[0].dtype());
      Tensor region = full;
      for (int k = 0; k < static_cast<int>(ss.size()); ++k) region = narrow(region, k, 0, gs.shape()[k]);
      copy_(region, gs);
      gs = full;
    }
    return std::vector<Tensor>{g[0], gs};
  });
  return out;
}

// Slices of t at `index` (1-D) along dim, stacked in index order. Differentiable in t (repeated indices
// accumulate their gradients).
inline Tensor index_select(const Tensor& t, std::int64_t dim, const Tensor& index) {
  profiler::Scope profile_scope_("index_select");
  detail::check_cpu(t, "index_select");
  ARCLIGHT_CHECK(t.dim() > 0, "index_select", "cannot index a 0-d tensor");
  ARCLIGHT_CHECK(index.dim() <= 1, "index_select", "index must be 1-D, got ", index.str());
  const int d = normalize_dim(dim, t.dim(), "index_select");
  const auto idx = detail::checked_indices(index, t.shape()[d], "index_select");
  Shape shape = t.shape();
  shape[d] = static_cast<std::int64_t>(idx.size());
  Tensor out = empty(shape, t.dtype());
  {
    NoGradGuard ng;
    parallel_for(0, static_cast<std::int64_t>(idx.size()), 64, [&](std::int64_t b, std::int64_t e) {
      // raw views (no autograd bookkeeping from worker threads)
      Shape one = t.shape();
      one[d] = 1;
      for (std::int64_t k = b; k < e; ++k) {
        Tensor dst = detail::make_view(out, one, out.strides(), out.offset() + k * out.strides()[d]);
        Tensor src = detail::make_view(t, one, t.strides(), t.offset() + idx[static_cast<std::size_t>(k)] * t.strides()[d]);
        copy_(dst, src);
      }
    });
  }
  autograd::record("index_select", {t}, out, [idx, d, shape_in = t.shape()](const std::vector<Tensor>& g) {
    Tensor gi = zeros(shape_in, g[0].dtype());
    for (std::size_t k = 0; k < idx.size(); ++k) {
      Tensor dst = narrow(gi, d, idx[k], 1);
      Tensor sum = arclight::detail::add_same_shape(dst, narrow(g[0], d, static_cast<std::int64_t>(k), 1));
      copy_(dst, sum);
    }
    return std::vector<Tensor>{gi};
  });
  return out;
}

// labels (integer, any shape) → labels.shape + [num_classes] with 1 at the label. requires: labels in range.
inline Tensor one_hot(const Tensor& labels, std::int64_t num_classes, DType dtype = DType::i64) {
  profiler::Scope profile_scope_("one_hot");
  ARCLIGHT_CHECK(num_classes > 0, "one_hot", "num_classes must be positive, got ", num_classes);
  const auto idx = detail::checked_indices(labels, num_classes, "one_hot");
  Shape shape = labels.shape();
  shape.push_back(num_classes);
  Tensor out = zeros(shape, dtype);
  dispatch_all(dtype, "one_hot", [&]<typename T>() {
    T* p = out.data_ptr<T>();
    for (std::size_t i = 0; i < idx.size(); ++i) p[static_cast<std::int64_t>(i) * num_classes + idx[i]] = T(1);
  });
  return out;
}

}  // namespace arclight::ops
