// Shared plumbing of the ops layer: argument checks with uniform messages and the translation of
// (broadcast) tensors into the raw strided-loop descriptions the CPU kernels take.
#pragma once

#include <array>
#include <vector>

#include "arclight/core/profiler.hpp"
#include "arclight/core/tensor.hpp"
#include "kernels/cpu/reduce.hpp"
#include "kernels/cpu/strided_loop.hpp"

namespace arclight::ops {

using arclight::Tensor;

namespace detail {

inline void check_cpu(const Tensor& t, const char* op) {
  ARCLIGHT_CHECK(t.defined(), op, "got an undefined tensor");
  ARCLIGHT_CHECK(t.device().is_cpu(), op, "tensor ", t.str(), " is on ", t.device().str(),
                 " but this op has no CUDA implementation (copy it to the CPU with to(Device::cpu()))");
}

// The device an op runs on: that of its operands, which must all be defined and on one device (no implicit
// transfers; the message names the op and both devices). Optional operands are checked with
// cuda::detail::check_device(t, device, op, what) once the device is known.
inline Device op_device(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) ARCLIGHT_CHECK(t->defined(), op, "got an undefined tensor");
  const Device dev = (*ts.begin())->device();
  for (const Tensor* t : ts) cuda::detail::check_device(*t, dev, op, "operand");
  return dev;
}

inline void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  ARCLIGHT_CHECK(a.dtype() == b.dtype(), op, "dtype mismatch: ", a.str(), " vs ", b.str(),
                 " (expected both ", dtype_name(a.dtype()), "; convert with to())");
}

// Strides of `t` viewed with the broadcast shape `out_shape` (0 on broadcast dims), in bytes.
inline void broadcast_strides_into(const Tensor& t, const Shape& out_shape, std::int64_t* dst, std::size_t elem) {
  const std::size_t n = out_shape.size(), lead = n - t.shape().size();
  for (std::size_t d = 0; d < n; ++d) {
    if (d < lead || t.shape()[d - lead] == 1) dst[d] = 0;
    else dst[d] = t.strides()[d - lead] * static_cast<std::int64_t>(elem);
  }
}

// Operand description for out (index 0) and inputs broadcast to out's shape.
template <int N>
kernels::cpu::StridedOperands<N> broadcast_operands(const std::array<const Tensor*, N>& ts) {
  kernels::cpu::StridedOperands<N> op;
  const Shape& shape = ts[0]->shape();
  op.ndim = static_cast<int>(shape.size());
  ARCLIGHT_CHECK(op.ndim <= kernels::cpu::kMaxDims, "elementwise", "rank ", op.ndim, " exceeds the maximum rank ",
                 kernels::cpu::kMaxDims);
  for (int d = 0; d < op.ndim; ++d) op.sizes[d] = shape[d];
  for (int k = 0; k < N; ++k) {
    broadcast_strides_into(*ts[k], shape, op.strides[k], ts[k]->element_size());
    op.base[k] = static_cast<char*>(ts[k]->raw_data());
  }
  return op;
}

// Sorted, de-duplicated, normalised dims; an empty list means every dim.
inline std::vector<int> normalize_dims(const std::vector<std::int64_t>& dims, std::int64_t ndim, const char* op) {
  std::vector<bool> mark(static_cast<std::size_t>(ndim), dims.empty());
  for (auto d : dims) {
    const int nd = normalize_dim(d, ndim, op);
    if (ndim == 0) continue;
    ARCLIGHT_CHECK(!mark[static_cast<std::size_t>(nd)] || dims.empty(), op, "dim ", d, " appears twice in the dim list");
    mark[static_cast<std::size_t>(nd)] = true;
  }
  std::vector<int> out;
  for (int d = 0; d < ndim; ++d)
    if (mark[static_cast<std::size_t>(d)]) out.push_back(d);
  return out;
}

// Splits t's dims into kept and reduced for the reduction kernel.
inline kernels::cpu::ReduceLayout reduce_layout(const Tensor& t, const std::vector<int>& red_dims) {
  kernels::cpu::ReduceLayout L;
  ARCLIGHT_CHECK(t.dim() <= kernels::cpu::ReduceLayout::kMax, "reduce", "rank ", t.dim(), " too large");
  std::vector<bool> red(static_cast<std::size_t>(t.dim()), false);
  for (int d : red_dims) red[static_cast<std::size_t>(d)] = true;
  for (int d = 0; d < t.dim(); ++d) {
    if (red[static_cast<std::size_t>(d)]) {
      L.red_sizes[L.n_red] = t.shape()[d];
      L.red_strides[L.n_red++] = t.strides()[d];
    } else {
      L.keep_sizes[L.n_keep] = t.shape()[d];
      L.keep_strides[L.n_keep++] = t.strides()[d];
    }
  }
  return L;
}

// Output shape of a reduction over `red_dims`.
inline Shape reduced_shape(const Shape& in, const std::vector<int>& red_dims, bool keepdim) {
  Shape out;
  std::vector<bool> red(in.size(), false);
  for (int d : red_dims) red[static_cast<std::size_t>(d)] = true;
  for (std::size_t d = 0; d < in.size(); ++d) {
    if (!red[d]) out.push_back(in[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

}  // namespace detail
}  // namespace arclight::ops
