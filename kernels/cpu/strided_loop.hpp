// The one loop every elementwise CPU kernel runs on. N operands share a logical shape; each has its own
// element strides (0 on broadcast dims). Dims are first collapsed where every operand is contiguous across
// them, so contiguous or simply broadcast tensors become one or two long rows. The row-major index space
// is split into chunks for OpenMP threads; each thread walks its chunk in row segments and calls
//   body(ptrs[N] (byte pointers at the segment start), inner_strides[N] (in bytes), count)
// so the body's inner loop can be a plain (vectorisable) loop when all inner strides equal the element size.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <tuple>
#include <utility>

#include <omp.h>

namespace arclight::kernels::cpu {

constexpr int kMaxDims = 16;

template <int N>
struct StridedOperands {
  int ndim = 0;
  std::int64_t sizes[kMaxDims] = {};
  std::int64_t strides[N][kMaxDims] = {};  // in bytes
  char* base[N] = {};
};

// Removes size-1 dims and merges neighbours that are contiguous for every operand.
template <int N>
void collapse_dims(StridedOperands<N>& op) {
  int out = 0;
  for (int d = 0; d < op.ndim; ++d) {
    if (op.sizes[d] == 1) continue;
    if (out > 0) {
      bool mergeable = true;
      for (int k = 0; k < N; ++k)
        if (op.strides[k][out - 1] != op.strides[k][d] * op.sizes[d]) mergeable = false;
      if (mergeable) {
        op.sizes[out - 1] *= op.sizes[d];
        for (int k = 0; k < N; ++k) op.strides[k][out - 1] = op.strides[k][d];
        continue;
      }
    }
    op.sizes[out] = op.sizes[d];
    for (int k = 0; k < N; ++k) op.strides[k][out] = op.strides[k][d];
    ++out;
  }
  if (out == 0) {  // a single element
    op.sizes[0] = 1;
    for (int k = 0; k < N; ++k) op.strides[k][0] = 0;
    out = 1;
  }
  op.ndim = out;
}

// Walks linear indices [begin, end) of the collapsed index space in row segments.
template <int N, typename Body>
void strided_range(const StridedOperands<N>& op, std::int64_t begin, std::int64_t end, Body& body) {
  const int nd = op.ndim;
  const std::int64_t inner = op.sizes[nd - 1];
  std::int64_t idx[kMaxDims];
  std::int64_t rem = begin;
  for (int d = nd - 1; d >= 0; --d) {
    idx[d] = rem % op.sizes[d];
    rem /= op.sizes[d];
  }
  std::array<char*, N> ptr;
  std::array<std::int64_t, N> inner_stride;
  for (int k = 0; k < N; ++k) {
    ptr[k] = op.base[k];
    for (int d = 0; d < nd; ++d) ptr[k] += idx[d] * op.strides[k][d];
    inner_stride[k] = op.strides[k][nd - 1];
  }
  std::int64_t pos = begin;
  while (pos < end) {
    const std::int64_t count = std::min(inner - idx[nd - 1], end - pos);
    body(ptr, inner_stride, count);
    pos += count;
    if (pos >= end) break;
    // advance: move to the start of the next row
    for (int k = 0; k < N; ++k) ptr[k] += count * inner_stride[k];
    idx[nd - 1] += count;
    for (int d = nd - 1; d > 0 && idx[d] == op.sizes[d]; --d) {
      for (int k = 0; k < N; ++k) ptr[k] += op.strides[k][d - 1] - op.sizes[d] * op.strides[k][d];
      idx[d] = 0;
      ++idx[d - 1];
    }
  }
}

// Runs body over the whole index space of `op`, in parallel when there are more than `grain` elements.
template <int N, typename Body>
void strided_for_each(StridedOperands<N> op, Body body, std::int64_t grain = 32768) {
  collapse_dims(op);
  std::int64_t total = 1;
  for (int d = 0; d < op.ndim; ++d) total *= op.sizes[d];
  if (total == 0) return;
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const std::int64_t want = std::min<std::int64_t>(threads, (total + grain - 1) / grain);
  if (want <= 1) {
    strided_range(op, 0, total, body);
    return;
  }
#pragma omp parallel num_threads(static_cast<int>(want))
  {
    const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const std::int64_t chunk = (total + nt - 1) / nt;
    const std::int64_t b = t * chunk, e = std::min(total, b + chunk);
    Body local = body;
    if (b < e) strided_range(op, b, e, local);
  }
}

// out[i] = f(in[i]...) over strided operands of element types Out, In...; operand 0 is the output.
template <typename Out, typename... In, typename F>
void strided_map(StridedOperands<1 + sizeof...(In)> op, F f, std::int64_t grain = 32768) {
  constexpr int N = 1 + sizeof...(In);
  strided_for_each<N>(op, [f](const std::array<char*, N>& p, const std::array<std::int64_t, N>& s, std::int64_t n) {
    bool contiguous = s[0] == static_cast<std::int64_t>(sizeof(Out));
    {
      int k = 1;
      ((contiguous = contiguous && (s[k] == static_cast<std::int64_t>(sizeof(In)) || s[k] == 0), ++k), ...);
    }
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      Out* o = reinterpret_cast<Out*>(p[0]);
      if (contiguous) {
        // inputs either contiguous or broadcast (stride 0): index with (stride / size) ∈ {0, 1}
        const std::int64_t step[] = {(s[I + 1] == 0 ? 0 : 1)...};
        const bool all_unit = ((step[I] == 1) && ...);
        if (all_unit) {
          const std::tuple<const In*...> in{reinterpret_cast<const In*>(p[I + 1])...};
#pragma omp simd
          for (std::int64_t i = 0; i < n; ++i) o[i] = f(std::get<I>(in)[i]...);
        } else {
          const std::tuple<const In*...> in{reinterpret_cast<const In*>(p[I + 1])...};
          for (std::int64_t i = 0; i < n; ++i) o[i] = f(std::get<I>(in)[i * step[I]]...);
        }
      } else {
        for (std::int64_t i = 0; i < n; ++i)
          *reinterpret_cast<Out*>(p[0] + i * s[0]) = f(*reinterpret_cast<const In*>(p[I + 1] + i * s[I + 1])...);
      }
    }(std::index_sequence_for<In...>{});
  }, grain);
}

}  // namespace arclight::kernels::cpu
