// CPU kernels of the fused log-softmax + label-smoothing cross-entropy with optional per-class weights
// and none/mean/sum reduction, torch.nn.functional.cross_entropy semantics (kernels/common/softmax_math.hpp
// spells them out). One row per OpenMP iteration; row statistics in double; every term is formed from
// logits shifted by the row max, so ±1e4 logits are exact. The backward recomputes the row statistics
// from the logits (nothing but the inputs is saved).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "arclight/core/error.hpp"
#include "kernels/common/softmax_math.hpp"

namespace arclight::kernels::cpu {

namespace detail {

inline const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::kNone:
      return "none";
    case Reduction::kMean:
      return "mean";
    case Reduction::kSum:
      return "sum";
  }
  return "unknown";
}

// Validates the config, labels and class weights; returns Σ_j w_j (K without weights).
template <typename T>
double cross_entropy_validate(const char* op, const CrossEntropyShape& s, const CrossEntropyConfig& c,
                              const int64_t* labels, const T* class_weights) {
  ARCLIGHT_CHECK(s.n >= 0, op, "expected n >= 0 rows, got n=", s.n);
  ARCLIGHT_CHECK(s.classes > 0, op, "expected classes > 0, got classes=", s.classes);
  const int r = int(c.reduction);
  ARCLIGHT_CHECK(r >= 0 && r <= 2, op, "unknown reduction ", r, " (expected none=0, mean=1, sum=2)");
  ARCLIGHT_CHECK(std::isfinite(c.label_smoothing) && c.label_smoothing >= 0.0 && c.label_smoothing <= 1.0, op,
                 "expected label_smoothing in [0, 1], got ", c.label_smoothing);
  if (s.n > 0) ARCLIGHT_CHECK(labels != nullptr, op, "expected a labels array of ", s.n, " entries, got null");
  for (int64_t i = 0; i < s.n; ++i) {
    ARCLIGHT_CHECK(labels[i] >= 0 && labels[i] < s.classes, op, "label ", labels[i], " at row ", i,
                   " is out of range: expected 0 <= label < ", s.classes);
  }
  if (class_weights == nullptr) return double(s.classes);
  double sum_w = 0.0;
  for (int64_t j = 0; j < s.classes; ++j) {
    const double w = double(class_weights[j]);
    ARCLIGHT_CHECK(std::isfinite(w) && w >= 0.0, op, "expected class weights finite and >= 0, got weight ", w,
                   " for class ", j);
    sum_w += w;
  }
  return sum_w;
}

// Divisor of the mean: Σ_i w_{y_i} (N without weights); throws when it is 0 (torch would return NaN).
template <typename T>
double cross_entropy_mean_divisor(const char* op, const CrossEntropyShape& s, const int64_t* labels,
                                  const T* class_weights) {
  if (class_weights == nullptr) return double(s.n);
  double d = 0.0;
  for (int64_t i = 0; i < s.n; ++i) d += double(class_weights[labels[i]]);
  ARCLIGHT_CHECK(d > 0.0, op, "mean reduction over rows whose target weights sum to 0: expected a positive sum");
  return d;
}

// Statistics of one row of logits: max, log Σ exp(z − max), Σ_j w_j (z_j − max).
struct RowStats {
  double max;
  double log_sum;
  double weighted_sum_shifted;
};

template <typename T>
RowStats cross_entropy_row_stats(const T* z, int64_t k, const T* w, double sum_w) {
  double m = double(z[0]);
  for (int64_t j = 1; j < k; ++j) m = double(z[j]) > m ? double(z[j]) : m;
  double sum = 0.0, wz = 0.0;
  for (int64_t j = 0; j < k; ++j) {
    const double zs = double(z[j]) - m;
    sum += double(std::exp(T(zs)));  // exp in T (terms <= 1), summed in double
    wz += (w != nullptr ? double(w[j]) : 1.0) * double(z[j]);
  }
  // Σ w_j (z_j − m) = Σ w_j z_j − m Σ w_j; in double the cancellation costs ~1e-16 relative to |m|·Σw.
  return RowStats{m, std::log(sum), wz - m * sum_w};
}

}  // namespace detail

// cross_entropy_forward: label-smoothing CE of logits [n, classes] against labels.
// requires: labels in [0, classes), label_smoothing in [0, 1], class_weights null or `classes` finite
//   values >= 0 (mean: their sum over the batch's targets > 0); loss holds n values (reduction none) or 1.
// ensures: loss written (not accumulated); the sum over rows runs in row order (deterministic).
template <typename T>
void cross_entropy_forward(const CrossEntropyShape& shape, const CrossEntropyConfig& cfg, const T* logits,
                           const int64_t* labels, const T* class_weights, T* loss) {
  const char* op = "cross_entropy_forward";
  const double sum_w = detail::cross_entropy_validate(op, shape, cfg, labels, class_weights);
  ARCLIGHT_CHECK(loss != nullptr, op, "expected a non-null loss output");
  if (shape.n == 0) {
    // torch: the sum over no rows is 0, the mean over no rows is NaN.
    if (cfg.reduction != Reduction::kNone) loss[0] = cfg.reduction == Reduction::kSum ? T(0) : T(NAN);
    return;
  }
  const double divisor =
      cfg.reduction == Reduction::kMean ? detail::cross_entropy_mean_divisor(op, shape, labels, class_weights) : 1.0;
  ARCLIGHT_CHECK(logits != nullptr, op, "expected non-null logits");
  const int64_t k = shape.classes;
  std::vector<double> rows(cfg.reduction == Reduction::kNone ? 0 : size_t(shape.n));
#pragma omp parallel for schedule(static) if (shape.n * k > 32768)
  for (int64_t i = 0; i < shape.n; ++i) {
    const T* z = logits + i * k;
    const int64_t y = labels[i];
    const auto st = detail::cross_entropy_row_stats(z, k, class_weights, sum_w);
    const double w_y = class_weights != nullptr ? double(class_weights[y]) : 1.0;
    const auto co = ls_ce_coeffs(cfg.label_smoothing, double(k), w_y, sum_w);
    const double l = ls_ce_row_loss(co, st.log_sum, double(z[y]) - st.max, st.weighted_sum_shifted);
    if (cfg.reduction == Reduction::kNone) {
      loss[i] = T(l);
    } else {
      rows[size_t(i)] = l;
    }
  }
  if (cfg.reduction != Reduction::kNone) {
    double total = 0.0;
    for (double v : rows) total += v;
    loss[0] = T(total / divisor);
  }
}

// cross_entropy_backward: grad_logits = d(Σ grad_loss·loss)/d(logits).
//   grad_logits[i,j] = g_i·(A_i·p_ij − a_ij), g_i = grad_loss[i] (none), grad_loss[0] (sum) or
//   grad_loss[0]/Σ_i w_{y_i} (mean); p − q without weights.
// requires: as cross_entropy_forward; grad_loss holds n values (none) or 1; grad_logits n*classes values.
// ensures: grad_logits written (not accumulated).
template <typename T>
void cross_entropy_backward(const CrossEntropyShape& shape, const CrossEntropyConfig& cfg, const T* logits,
                            const int64_t* labels, const T* class_weights, const T* grad_loss, T* grad_logits) {
  const char* op = "cross_entropy_backward";
  const double sum_w = detail::cross_entropy_validate(op, shape, cfg, labels, class_weights);
  if (shape.n == 0) return;
  ARCLIGHT_CHECK(logits != nullptr && grad_loss != nullptr && grad_logits != nullptr, op,
                 "expected non-null logits, grad_loss and grad_logits");
  const double divisor =
      cfg.reduction == Reduction::kMean ? detail::cross_entropy_mean_divisor(op, shape, labels, class_weights) : 1.0;
  const int64_t k = shape.classes;
#pragma omp parallel for schedule(static) if (shape.n * k > 32768)
  for (int64_t i = 0; i < shape.n; ++i) {
    const T* z = logits + i * k;
    T* g = grad_logits + i * k;
    const int64_t y = labels[i];
    const auto st = detail::cross_entropy_row_stats(z, k, class_weights, sum_w);
    const double w_y = class_weights != nullptr ? double(class_weights[y]) : 1.0;
    const auto co = ls_ce_coeffs(cfg.label_smoothing, double(k), w_y, sum_w);
    const double gi = cfg.reduction == Reduction::kNone ? double(grad_loss[i]) : double(grad_loss[0]) / divisor;
    for (int64_t j = 0; j < k; ++j) {
      const double p = double(std::exp(T(double(z[j]) - st.max - st.log_sum)));
      const double wj = class_weights != nullptr ? double(class_weights[j]) : 1.0;
      g[j] = T(gi * ls_ce_grad(co, p, wj, j == y));
    }
  }
}

}  // namespace arclight::kernels::cpu
