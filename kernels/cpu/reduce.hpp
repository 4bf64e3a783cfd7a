// Generic strided reduction on the CPU. The input's dims are split into kept dims (the output, written
// contiguously in row-major order) and reduced dims; each output element folds its reduced sub-tensor in
// row-major order with an accumulator. Many outputs: threads split the outputs. Few outputs (e.g. a full
// reduction): threads split the reduced range into fixed chunks whose partial results are merged in chunk
// order, so the result does not depend on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <omp.h>

namespace arclight::kernels::cpu {

struct ReduceLayout {
  static constexpr int kMax = 16;
  int n_keep = 0, n_red = 0;
  std::int64_t keep_sizes[kMax] = {}, keep_strides[kMax] = {};  // strides in elements
  std::int64_t red_sizes[kMax] = {}, red_strides[kMax] = {};
};

// Merges adjacent reduced dims that are contiguous with each other (keeps row-major order).
inline void collapse_reduced(ReduceLayout& L) {
  int out = 0;
  for (int d = 0; d < L.n_red; ++d) {
    if (L.red_sizes[d] == 1) continue;
    if (out > 0 && L.red_strides[out - 1] == L.red_strides[d] * L.red_sizes[d]) {
      L.red_sizes[out - 1] *= L.red_sizes[d];
      L.red_strides[out - 1] = L.red_strides[d];
      continue;
    }
    L.red_sizes[out] = L.red_sizes[d];
    L.red_strides[out] = L.red_strides[d];
    ++out;
  }
  if (out == 0) {
    L.red_sizes[0] = 1;
    L.red_strides[0] = 0;
    out = 1;
  }
  L.n_red = out;
}

// Folds reduced linear indices [begin, end) of the sub-tensor at `base` into acc via op.step(acc, x, i).
template <typename T, typename Acc, typename Op>
void reduce_range(const T* base, const ReduceLayout& L, std::int64_t begin, std::int64_t end, Acc& acc, const Op& op) {
  const int nd = L.n_red;
  std::int64_t idx[ReduceLayout::kMax];
  std::int64_t rem = begin;
  for (int d = nd - 1; d >= 0; --d) {
    idx[d] = rem % L.red_sizes[d];
    rem /= L.red_sizes[d];
  }
  const T* p = base;
  for (int d = 0; d < nd; ++d) p += idx[d] * L.red_strides[d];
  const std::int64_t inner = L.red_sizes[nd - 1], s = L.red_strides[nd - 1];
  std::int64_t pos = begin;
  while (pos < end) {
    const std::int64_t count = std::min(inner - idx[nd - 1], end - pos);
    if (s == 1)
      for (std::int64_t i = 0; i < count; ++i) op.step(acc, p[i], pos + i);
    else
      for (std::int64_t i = 0; i < count; ++i) op.step(acc, p[i * s], pos + i);
    pos += count;
    if (pos >= end) break;
    p += count * s;
    idx[nd - 1] += count;
    for (int d = nd - 1; d > 0 && idx[d] == L.red_sizes[d]; --d) {
      p += L.red_strides[d - 1] - L.red_sizes[d] * L.red_strides[d];
      idx[d] = 0;
      ++idx[d - 1];
    }
  }
}

// out[o] = op.finish(fold of the reduced sub-tensor of output o). Op provides:
//   Acc init() const; void step(Acc&, T x, int64 reduced_index) const; void merge(Acc& into, const Acc& later) const;
//   Out finish(const Acc&, int64 reduced_count) const.
template <typename T, typename Out, typename Op>
void reduce(const T* in, ReduceLayout L, Out* out, const Op& op) {
  collapse_reduced(L);
  std::int64_t n_out = 1, n_red = 1;
  for (int d = 0; d < L.n_keep; ++d) n_out *= L.keep_sizes[d];
  for (int d = 0; d < L.n_red; ++d) n_red *= L.red_sizes[d];
  auto base_of = [&](std::int64_t o) {
    const T* p = in;
    for (int d = L.n_keep - 1; d >= 0; --d) {
      p += (o % L.keep_sizes[d]) * L.keep_strides[d];
      o /= L.keep_sizes[d];
    }
    return p;
  };
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  constexpr std::int64_t kChunk = 16384;
  if (n_out >= 4 * threads || n_red < 2 * kChunk || threads == 1) {
    const bool par = n_out * n_red > 32768 && threads > 1;
#pragma omp parallel for schedule(static) if (par)
    for (std::int64_t o = 0; o < n_out; ++o) {
      auto acc = op.init();
      reduce_range(base_of(o), L, 0, n_red, acc, op);
      out[o] = op.finish(acc, n_red);
    }
    return;
  }
  // Few outputs, long reductions: fixed chunks, merged in order.
  const std::int64_t n_chunks = (n_red + kChunk - 1) / kChunk;
  using Acc = decltype(op.init());
  std::vector<Acc> partial(static_cast<std::size_t>(n_chunks));
  for (std::int64_t o = 0; o < n_out; ++o) {
    const T* base = base_of(o);
#pragma omp parallel for schedule(static)
    for (std::int64_t c = 0; c < n_chunks; ++c) {
      Acc acc = op.init();
      reduce_range(base, L, c * kChunk, std::min(n_red, (c + 1) * kChunk), acc, op);
      partial[static_cast<std::size_t>(c)] = acc;
    }
    Acc total = partial[0];
    for (std::int64_t c = 1; c < n_chunks; ++c) op.merge(total, partial[static_cast<std::size_t>(c)]);
    out[o] = op.finish(total, n_red);
  }
}

// Accumulator type for sums: double for float inputs (the sum of many floats keeps its precision).
template <typename T>
using sum_acc_t = std::conditional_t<std::is_floating_point_v<T>, double, std::int64_t>;

}  // namespace arclight::kernels::cpu
