// Scalar math of the fused log-softmax + label-smoothing cross-entropy, shared by the CPU kernels
// (kernels/cpu/cross_entropy.hpp, kernels/cpu/arc_margin_cross_entropy.hpp) and the CUDA kernels.
// Semantics are torch.nn.functional.cross_entropy(z, y, weight=w, label_smoothing=ε, reduction=r):
//   row loss  l_i = Σ_j a_ij·(−log p_ij),  a_ij = (1 − ε)·w_{y_i}·[j = y_i] + (ε/K)·w_j,
//   none: l_i;  sum: Σ_i l_i;  mean: Σ_i l_i / Σ_i w_{y_i}  (torch normalises the smoothing term by the
//   same target-weight sum as its weighted NLL term; without weights w ≡ 1 and the divisor is N).
// Gradient: dl_i/dz_ik = A_i·p_ik − a_ik with A_i = Σ_j a_ij (= 1 without weights: p − q).
// Stability: every quantity is formed from shifted logits z − max(z), so logits of ±1e4 lose nothing to
// cancellation (lse − z is never computed as a difference of two large numbers).
#pragma once

#include <math.h>
#include <stdint.h>

#include "kernels/common/macros.hpp"

namespace arclight::kernels {

// Loss reduction (values stable across the CUDA boundary).
enum class Reduction : int32_t { kNone = 0, kMean = 1, kSum = 2 };

// Shape of a cross-entropy call: logits [n, classes] row-major, labels [n], optional weights [classes].
struct CrossEntropyShape {
  int64_t n = 0;
  int64_t classes = 0;
};

struct CrossEntropyConfig {
  double label_smoothing = 0.0;  // ε in [0, 1]
  Reduction reduction = Reduction::kMean;
};

// Running (max, Σ exp(x − max)) of a row, updated one element at a time (online softmax).
template <typename T>
struct SoftmaxAccumulator {
  T max;
  T sum;
};

// Starts the accumulator with the row's first element.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE SoftmaxAccumulator<T> softmax_start(T x0) {
  return SoftmaxAccumulator<T>{x0, T(1)};
}

// Adds x: rescales the running sum when the maximum moves, so no exp ever overflows.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE void softmax_push(SoftmaxAccumulator<T>& acc, T x) {
  if (x > acc.max) {
    acc.sum = acc.sum * ::exp(acc.max - x) + T(1);
    acc.max = x;
  } else {
    acc.sum += ::exp(x - acc.max);
  }
}

// Merges two partial accumulators (parallel reductions on the device).
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE SoftmaxAccumulator<T> softmax_merge(SoftmaxAccumulator<T> a,
                                                                         SoftmaxAccumulator<T> b) {
  if (b.max > a.max) {
    SoftmaxAccumulator<T> t = a;
    a = b;
    b = t;
  }
  a.sum += b.sum * ::exp(b.max - a.max);
  return a;
}

// Per-row smoothing coefficients: a_j = off·w_j + on·[j = y], total = Σ_j a_j.
template <typename T>
struct LsCeCoeffs {
  T on;     // (1 − ε)·w_y
  T off;    // ε / K
  T total;  // on + off·Σ_j w_j
};

// requires: classes > 0; w_y and sum_w are 1 and K when there are no class weights.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE LsCeCoeffs<T> ls_ce_coeffs(T label_smoothing, T classes, T w_y, T sum_w) {
  LsCeCoeffs<T> c;
  c.on = (T(1) - label_smoothing) * w_y;
  c.off = label_smoothing / classes;
  c.total = c.on + c.off * sum_w;
  return c;
}

// Row loss from shifted quantities: log_sum = log Σ exp(z_j − max), target_shifted = z_y − max,
// weighted_sum_shifted = Σ_j w_j (z_j − max).  l = total·log_sum − on·target_shifted − off·weighted_sum.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T ls_ce_row_loss(const LsCeCoeffs<T>& c, T log_sum, T target_shifted,
                                                      T weighted_sum_shifted) {
  return c.total * log_sum - c.on * target_shifted - c.off * weighted_sum_shifted;
}

// dl/dz_j = total·p_j − off·w_j − on·[j = y], with p_j = exp(z_j − max) / sum.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T ls_ce_grad(const LsCeCoeffs<T>& c, T prob, T w_j, bool is_target) {
  return c.total * prob - c.off * w_j - (is_target ? c.on : T(0));
}

}  // namespace arclight::kernels
