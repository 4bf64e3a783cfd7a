// The reshape family and copies. Views (view/reshape when strides allow, permute/transpose, narrow/slice/
// select, expand, squeeze/unsqueeze, flatten) share storage with their input and cost no copy; their
// backward maps the gradient back to the input's shape. contiguous/clone/to/copy_ are the copying ops.
// In-place writes (copy_) are refused on tensors that take part in a recorded graph.
#pragma once

#include <numeric>
#include <optional>
#include <vector>

#include "arclight/ops/common.hpp"

namespace arclight::ops {

namespace detail {

// A new TensorImpl over t's storage with the given geometry (no autograd state).
inline Tensor make_view(const Tensor& t, Shape shape, Strides strides, std::int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = t.dtype();
  return Tensor(std::move(impl));
}

// Strides that let `new_shape` view memory laid out as (old_shape, old_strides), if any exist.
inline std::optional<Strides> view_strides(const Shape& old_shape, const Strides& old_strides, const Shape& new_shape) {
  Strides ns(new_shape.size());
  std::int64_t numel = 1;
  for (auto s : old_shape) numel *= s;
  if (numel == 0 || old_shape.empty()) return contiguous_strides(new_shape);
  int view_d = static_cast<int>(new_shape.size()) - 1;
  std::int64_t chunk_base = old_strides.back(), tensor_numel = 1, view_numel = 1;
  for (int td = static_cast<int>(old_shape.size()) - 1; td >= 0; --td) {
    tensor_numel *= old_shape[td];
    if (td == 0 || (old_shape[td - 1] != 1 && old_strides[td - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        ns[view_d] = view_numel * chunk_base;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (td > 0) {
        chunk_base = old_strides[td - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return ns;
}

// Resolves one -1 entry and checks the element count.
inline Shape infer_shape(const Tensor& t, Shape shape, const char* op) {
  int infer = -1;
  std::int64_t known = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      ARCLIGHT_CHECK(infer < 0, op, "only one dimension can be -1, got ", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      ARCLIGHT_CHECK(shape[i] >= 0, op, "invalid size ", shape[i], " in shape ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    ARCLIGHT_CHECK(known != 0 && t.numel() % known == 0, op, "cannot reshape ", t.str(), " into ", shape_str(shape));
    shape[static_cast<std::size_t>(infer)] = t.numel() / known;
  }
  ARCLIGHT_CHECK(shape_numel(shape, op) == t.numel(), op, "cannot reshape ", t.str(), " (", t.numel(), " elements) into ",
                 shape_str(shape));
  return shape;
}

}  // namespace detail

// Contiguous copy of t, differentiable.
inline Tensor clone(const Tensor& t) {
  profiler::Scope profile_scope_("clone");
  ARCLIGHT_CHECK(t.defined(), "clone", "got an undefined tensor");
  Tensor out = arclight::detail::copy_contiguous(t);  // on t's device
  autograd::record("clone", {t}, out, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0]}; });
  return out;
}

// t itself when already contiguous, else a contiguous copy (differentiable).
inline Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : clone(t); }

// A view with a new shape. requires: the strides allow it (else use reshape); one size may be -1.
inline Tensor view(const Tensor& t, const Shape& shape_in) {
  ARCLIGHT_CHECK(t.defined(), "view", "got an undefined tensor");  // views work on any device
  Shape shape = detail::infer_shape(t, shape_in, "view");
  auto st = detail::view_strides(t.shape(), t.strides(), shape);
  ARCLIGHT_CHECK(st.has_value(), "view", "cannot view ", t.str(), " with strides ", shape_str(t.strides()), " as ",
                 shape_str(shape), " without a copy; use reshape()");
  Tensor out = detail::make_view(t, shape, *st, t.offset());
  const Shape in_shape = t.shape();
  autograd::record("view", {t}, out, [in_shape](const std::vector<Tensor>& g) {
    Tensor gi = contiguous(g[0]);
    return std::vector<Tensor>{detail::make_view(gi, in_shape, contiguous_strides(in_shape), gi.offset())};
  });
  return out;
}

// A view when possible, otherwise a copy with the new shape. One size may be -1.
inline Tensor reshape(const Tensor& t, const Shape& shape_in) {
  ARCLIGHT_CHECK(t.defined(), "reshape", "got an undefined tensor");  // views work on any device
  Shape shape = detail::infer_shape(t, shape_in, "reshape");
  if (detail::view_strides(t.shape(), t.strides(), shape)) return view(t, shape);
  return view(clone(t), shape);
}

// Merges dims [start, end] into one.
inline Tensor flatten(const Tensor& t, std::int64_t start = 0, std::int64_t end = -1) {
  if (t.dim() == 0) return reshape(t, {1});
  const int s = normalize_dim(start, t.dim(), "flatten"), e = normalize_dim(end, t.dim(), "flatten");
  ARCLIGHT_CHECK(s <= e, "flatten", "start dim ", start, " comes after end dim ", end);
  Shape shape(t.shape().begin(), t.shape().begin() + s);
  std::int64_t m = 1;
  for (int d = s; d <= e; ++d) m *= t.shape()[d];
  shape.push_back(m);
  shape.insert(shape.end(), t.shape().begin() + e + 1, t.shape().end());
  return reshape(t, shape);
}

// Reorders dims: out.shape[i] = t.shape[dims[i]]. A view.
inline Tensor permute(const Tensor& t, const std::vector<std::int64_t>& dims) {
  ARCLIGHT_CHECK(t.defined(), "permute", "got an undefined tensor");  // views work on any device
  ARCLIGHT_CHECK(static_cast<std::int64_t>(dims.size()) == t.dim(), "permute", "got ", dims.size(), " dims for ",
                 t.str(), "; expected one per dim");
  Shape shape(dims.size());
  Strides strides(dims.size());
  std::vector<std::int64_t> inverse(dims.size(), -1);
  for (std::size_t i = 0; i < dims.size(); ++i) {
    const int d = normalize_dim(dims[i], t.dim(), "permute");
    ARCLIGHT_CHECK(inverse[static_cast<std::size_t>(d)] < 0, "permute", "dim ", dims[i], " repeated");
    inverse[static_cast<std::size_t>(d)] = static_cast<std::int64_t>(i);
    shape[i] = t.shape()[d];
    strides[i] = t.strides()[d];
  }
  Tensor out = detail::make_view(t, shape, strides, t.offset());
  autograd::record("permute", {t}, out,
                   [inverse](const std::vector<Tensor>& g) { return std::vector<Tensor>{permute(g[0], inverse)}; });
  return out;
}

inline Tensor transpose(const Tensor& t, std::int64_t d0, std::int64_t d1) {
  std::vector<std::int64_t> dims(static_cast<std::size_t>(t.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  if (t.dim() == 0) return t;
  std::swap(dims[static_cast<std::size_t>(normalize_dim(d0, t.dim(), "transpose"))],
            dims[static_cast<std::size_t>(normalize_dim(d1, t.dim(), "transpose"))]);
  return permute(t, dims);
}

// Elements [start, end) in steps of `step` (> 0) along dim; start/end clamp to the size, negative
// values count from the end. A view.
inline Tensor slice(const Tensor& t, std::int64_t dim, std::int64_t start, std::int64_t end, std::int64_t step = 1) {
  ARCLIGHT_CHECK(t.defined(), "slice", "got an undefined tensor");  // views work on any device
  const int d = normalize_dim(dim, t.dim(), "slice");
  ARCLIGHT_CHECK(t.dim() > 0, "slice", "cannot slice a 0-d tensor");
  ARCLIGHT_CHECK(step > 0, "slice", "step must be positive, got ", step);
  const std::int64_t n = t.shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<std::int64_t>(start, 0, n);
  end = std::clamp<std::int64_t>(end, start, n);
  Shape shape = t.shape();
  Strides strides = t.strides();
  shape[d] = (end - start + step - 1) / step;
  strides[d] *= step;
  Tensor out = detail::make_view(t, shape, strides, t.offset() + start * t.strides()[d]);
  const Shape in_shape = t.shape();
  autograd::record("slice", {t}, out, [in_shape, d, start, end, step](const std::vector<Tensor>& g) {
    Tensor gi = zeros(in_shape, g[0].dtype(), g[0].device());
    Tensor dst = slice(gi, d, start, end, step);
    Tensor src = g[0];
    if (gi.device().is_cuda()) {
      cuda::detail::copy_into(dst, src, "slice backward");
      return std::vector<Tensor>{gi};
    }
    kernels::cpu::StridedOperands<2> op = detail::broadcast_operands<2>({&dst, &src});
    dispatch_floating(gi.dtype(), "slice backward", [&]<typename T>() { kernels::cpu::strided_map<T, T>(op, [](T x) { return x; }); });
    return std::vector<Tensor>{gi};
  });
  return out;
}

// `length` elements from `start` along dim. requires: 0 ≤ start, start + length ≤ size. A view.
inline Tensor narrow(const Tensor& t, std::int64_t dim, std::int64_t start, std::int64_t length) {
  const int d = normalize_dim(dim, t.dim(), "narrow");
  const std::int64_t n = t.dim() ? t.shape()[d] : 0;
  if (start < 0) start += n;
  ARCLIGHT_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow", "range [", start, ", ", start + length,
                 ") is outside dim ", d, " of size ", n, " of ", t.str());
  return slice(t, d, start, start + length);
}

// Inserts a size-1 dim at position dim (in [-(ndim+1), ndim]). A view.
inline Tensor unsqueeze(const Tensor& t, std::int64_t dim) {
  const int d = normalize_dim(dim, t.dim() + 1, "unsqueeze");
  Shape shape = t.shape();
  shape.insert(shape.begin() + d, 1);
  return view(t, shape);
}

// Removes the size-1 dim `dim` (no-op if its size is not 1), or every size-1 dim when dim is omitted.
inline Tensor squeeze(const Tensor& t, std::optional<std::int64_t> dim = std::nullopt) {
  Shape shape;
  const int only = dim ? normalize_dim(*dim, t.dim(), "squeeze") : -1;
  for (int d = 0; d < t.dim(); ++d)
    if (t.shape()[d] != 1 || (only >= 0 && d != only)) shape.push_back(t.shape()[d]);
  return view(t, shape);
}

// Index `index` of dim, removing that dim. A view.
inline Tensor select(const Tensor& t, std::int64_t dim, std::int64_t index) {
  const int d = normalize_dim(dim, t.dim(), "select");
  const std::int64_t n = t.shape()[d];
  ARCLIGHT_CHECK(index >= -n && index < n, "select", "index ", index, " out of range for dim ", d, " of size ", n);
  return squeeze(narrow(t, d, index < 0 ? index + n : index, 1), d);
}

// Sums g over the dims that broadcasting added or stretched, giving a tensor of `shape`.
Tensor sum_to(const Tensor& g, const Shape& shape);  // reduce.hpp

// Broadcasts t to `shape` (NumPy rules; -1 keeps a size) without copying: stride 0 on stretched dims.
inline Tensor expand(const Tensor& t, const Shape& shape_in) {
  ARCLIGHT_CHECK(t.defined(), "expand", "got an undefined tensor");  // views work on any device
  ARCLIGHT_CHECK(shape_in.size() >= t.shape().size(), "expand", "cannot expand ", t.str(), " to fewer dims ",
                 shape_str(shape_in));
  const std::size_t lead = shape_in.size() - t.shape().size();
  Shape shape = shape_in;
  Strides strides(shape.size(), 0);
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (d < lead) {
      ARCLIGHT_CHECK(shape[d] >= 0, "expand", "size -1 not allowed for a new leading dim in ", shape_str(shape_in));
      continue;
    }
    const std::int64_t have = t.shape()[d - lead];
    if (shape[d] == -1) shape[d] = have;
    ARCLIGHT_CHECK(have == shape[d] || have == 1, "expand", "cannot expand ", t.str(), " to ", shape_str(shape_in),
                   " (dim ", d, ": size ", have, " must be 1 or ", shape[d], ")");
    strides[d] = have == 1 && shape[d] != 1 ? 0 : t.strides()[d - lead];
  }
  Tensor out = detail::make_view(t, shape, strides, t.offset());
  const Shape in_shape = t.shape();
  autograd::record("expand", {t}, out,
                   [in_shape](const std::vector<Tensor>& g) { return std::vector<Tensor>{sum_to(g[0], in_shape)}; });
  return out;
}
inline Tensor broadcast_to(const Tensor& t, const Shape& shape) { return expand(t, shape); }

// Copies src into dst in place, broadcasting src to dst's shape and converting the dtype.
// requires: dst is not part of a graph that records (no requires_grad under grad mode). Returns dst.
inline Tensor& copy_(Tensor& dst, const Tensor& src) {
  ARCLIGHT_CHECK(dst.defined() && src.defined(), "copy_", "got an undefined tensor");
  ARCLIGHT_CHECK(!(grad_enabled() && dst.requires_grad()), "copy_", "in-place write into ", dst.str(),
                 " which requires grad; wrap parameter updates in NoGradGuard");
  ARCLIGHT_CHECK(broadcast_shapes(dst.shape(), src.shape(), "copy_") == dst.shape(), "copy_", "source ", src.str(),
                 " does not broadcast to destination ", dst.str());
  if (dst.device().is_cuda() || src.device().is_cuda()) {
    // Across devices: bring src to dst's device first (a blocking transfer), then copy / convert there.
    const Tensor s = src.device() == dst.device() ? src : src.to(dst.device());
    if (dst.device().is_cpu()) return copy_(dst, s);
    if (s.dtype() == dst.dtype()) cuda::detail::copy_into(dst, s, "copy_");
    else cuda::detail::copy_into(dst, cuda::detail::convert(contiguous(expand(s, dst.shape())), dst.dtype(), "copy_"),
                                 "copy_");
    return dst;
  }
  dispatch_all(dst.dtype(), "copy_", [&]<typename D>() {
    dispatch_all(src.dtype(), "copy_", [&]<typename S>() {
      kernels::cpu::strided_map<D, S>(detail::broadcast_operands<2>({&dst, &src}),
                                      [](S x) { return static_cast<D>(x); });
    });
  });
  return dst;
}

// Converts to dtype (a copy; t itself when the dtype already matches). Differentiable between floating types.
inline Tensor to(const Tensor& t, DType dtype) {
  ARCLIGHT_CHECK(t.defined(), "to", "got an undefined tensor");
  if (t.dtype() == dtype) return t;
  Tensor out;
  if (t.device().is_cuda()) {
    out = cuda::detail::convert(t, dtype, "to");
  } else {
    out = empty(t.shape(), dtype);
    NoGradGuard ng;
    copy_(out, t);
  }
  if (is_floating(dtype) && is_floating(t.dtype())) {
    const DType from = t.dtype();
    autograd::record("to", {t}, out, [from](const std::vector<Tensor>& g) { return std::vector<Tensor>{to(g[0], from)}; });
  }
  return out;
}

}  // namespace arclight::ops

// sum_to lives with the reductions; included here so that every user of expand() gets its definition.
#include "arclight/ops/reduce.hpp"
