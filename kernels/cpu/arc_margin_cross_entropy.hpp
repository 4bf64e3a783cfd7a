// The fused ArcMargin → label-smoothing cross-entropy on the CPU: from cosine logits [n, classes·K] and
// labels, one sweep over the batch computes the loss and d(loss)/d(cos) directly, the target logit
// modified in a register: no logits matrix and no grad-logits matrix are materialised. Per row, pass 1
// finds the max logit, pass 2 sums exp(z − max) and Σ w_j z_j, pass 3 writes the gradient (a 1000-class
// row stays in L1, a 100 000-class row in L2). It computes exactly the composition arc_margin_forward →
// cross_entropy_forward / cross_entropy_backward → arc_margin_backward (kernels/cpu/arc_margin.hpp,
// kernels/cpu/cross_entropy.hpp) and shares their validation and math (kernels/common/arc_margin_math.hpp,
// kernels/common/softmax_math.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "arclight/core/error.hpp"
#include "kernels/common/arc_margin_math.hpp"
#include "kernels/common/softmax_math.hpp"
#include "kernels/cpu/arc_margin.hpp"
#include "kernels/cpu/cross_entropy.hpp"

namespace arclight::kernels::cpu {

namespace detail {

// One row: returns the row loss l_i; when grad is non-null writes grad_scale·dl_i/dcos into it.
template <typename T>
double arc_margin_cross_entropy_row(const T* row, int64_t kc, int64_t k, int64_t y, const ArcMarginTerms<double>& terms,
                                    double s, const T* w, double sum_w, double label_smoothing, double grad_scale,
                                    T* grad) {
  int64_t arg_y;
  const double c_y = double(class_cosine(row, y, k, &arg_y));
  const double z_y = s * arc_margin_phi(c_y, terms);
  // Pass 1a: the row max. s > 0, so the largest non-target logit is s·max_j c_j.
  int64_t arg;
  double c_max = -INFINITY;
  for (int64_t j = 0; j < kc; ++j) {
    if (j == y) continue;
    const double c = double(class_cosine(row, j, k, &arg));
    c_max = c > c_max ? c : c_max;
  }
  const double z_max = s * c_max > z_y ? s * c_max : z_y;
  // Pass 1b: Σ exp(z − max) (exp in T: the terms are <= 1 and summed in double) and Σ w_j z_j.
  double sum = std::exp(z_y - z_max);
  double wz = (w != nullptr ? double(w[y]) : 1.0) * z_y;
  for (int64_t j = 0; j < kc; ++j) {
    if (j == y) continue;
    const double z = s * double(class_cosine(row, j, k, &arg));
    sum += double(std::exp(T(z - z_max)));
    wz += (w != nullptr ? double(w[j]) : 1.0) * z;
  }
  const double log_sum = std::log(sum);
  const double w_y = w != nullptr ? double(w[y]) : 1.0;
  const auto co = ls_ce_coeffs(label_smoothing, double(kc), w_y, sum_w);
  const double loss = ls_ce_row_loss(co, log_sum, z_y - z_max, wz - z_max * sum_w);
  if (grad == nullptr) return loss;
  // Pass 2: dl/dc_j = s·(A·p_j − a_j), and the target times phi'(c_y); losing sub-centres get 0.
  const double shift = z_max + log_sum;
  for (int64_t j = 0; j < kc; ++j) {
    const double c = double(class_cosine(row, j, k, &arg));
    const double z = j == y ? z_y : s * c;
    const double wj = w != nullptr ? double(w[j]) : 1.0;
    const double p = double(std::exp(T(z - shift)));
    double g = grad_scale * s * ls_ce_grad(co, p, wj, j == y);
    if (j == y) g *= arc_margin_phi_grad(c_y, terms);
    if (k == 1) {
      grad[j] = T(g);
    } else {
      T* gj = grad + j * k;
      for (int64_t q = 0; q < k; ++q) gj[q] = q == arg ? T(g) : T(0);
    }
  }
  return loss;
}

template <typename T>
void arc_margin_cross_entropy_run(const char* op, const ArcMarginShape& shape, const ArcMarginConfig& arc,
                                  const CrossEntropyConfig& ce, const T* cos, const int64_t* labels,
                                  const T* class_margins, const T* class_weights, T* loss, const T* grad_loss,
                                  T* grad_cos) {
  arc_margin_validate(op, shape, arc, labels, class_margins);
  const CrossEntropyShape ce_shape{shape.n, shape.classes};
  const double sum_w = cross_entropy_validate(op, ce_shape, ce, labels, class_weights);
  if (shape.n == 0) {
    if (loss != nullptr && ce.reduction != Reduction::kNone) loss[0] = ce.reduction == Reduction::kSum ? T(0) : T(NAN);
    return;
  }
  ARCLIGHT_CHECK(cos != nullptr, op, "expected non-null cos");
  const double divisor =
      ce.reduction == Reduction::kMean ? cross_entropy_mean_divisor(op, ce_shape, labels, class_weights) : 1.0;
  const int64_t kc = shape.classes, k = shape.sub_centers;
  std::vector<double> rows(ce.reduction == Reduction::kNone ? 0 : size_t(shape.n));
#pragma omp parallel for schedule(static) if (shape.n * kc * k > 32768)
  for (int64_t i = 0; i < shape.n; ++i) {
    const int64_t y = labels[i];
    const auto terms = arc_margin_row_terms(arc, class_margins, y);
    double scale = 1.0;
    if (grad_loss != nullptr) scale = ce.reduction == Reduction::kNone ? double(grad_loss[i]) : double(grad_loss[0]);
    if (ce.reduction == Reduction::kMean) scale /= divisor;
    const double l =
        arc_margin_cross_entropy_row(cos + i * kc * k, kc, k, y, terms, arc.scale, class_weights, sum_w,
                                     ce.label_smoothing, scale, grad_cos != nullptr ? grad_cos + i * kc * k : nullptr);
    if (loss == nullptr) continue;
    if (ce.reduction == Reduction::kNone) {
      loss[i] = T(l);
    } else {
      rows[size_t(i)] = l;
    }
  }
  if (loss != nullptr && ce.reduction != Reduction::kNone) {
    double total = 0.0;
    for (double v : rows) total += v;
    loss[0] = T(total / divisor);
  }
}

}  // namespace detail

// arc_margin_cross_entropy_forward: loss = cross_entropy(arc_margin(cos)) and, when grad_cos is non-null,
// grad_cos = d(loss)/d(cos) for a unit upstream gradient (all ones for reduction none), each row read
// three times while it is in cache and written once. An op saves grad_cos and scales it by the upstream
// gradient in its backward (row i by grad_loss[i] for none, by grad_loss[0] otherwise), since d loss/d cos
// is linear in it.
// requires: the union of arc_margin_forward's and cross_entropy_forward's requirements; loss holds n
//   values (none) or 1; grad_cos null or n*classes*K values.
// ensures: loss and grad_cos written (not accumulated); equal to the composed kernels up to rounding.
template <typename T>
void arc_margin_cross_entropy_forward(const ArcMarginShape& shape, const ArcMarginConfig& arc_cfg,
                                      const CrossEntropyConfig& ce_cfg, const T* cos, const int64_t* labels,
                                      const T* class_margins, const T* class_weights, T* loss, T* grad_cos) {
  ARCLIGHT_CHECK(loss != nullptr, "arc_margin_cross_entropy_forward", "expected a non-null loss output");
  detail::arc_margin_cross_entropy_run("arc_margin_cross_entropy_forward", shape, arc_cfg, ce_cfg, cos, labels,
                                       class_margins, class_weights, loss, static_cast<const T*>(nullptr), grad_cos);
}

// arc_margin_cross_entropy_backward: grad_cos = d(Σ grad_loss·loss)/d(cos), recomputed from cos (for an
// op that prefers not to keep the n*classes*K gradient between forward and backward).
// requires: as the forward; grad_loss holds n values (none) or 1; grad_cos n*classes*K values.
// ensures: grad_cos written (not accumulated).
template <typename T>
void arc_margin_cross_entropy_backward(const ArcMarginShape& shape, const ArcMarginConfig& arc_cfg,
                                       const CrossEntropyConfig& ce_cfg, const T* cos, const int64_t* labels,
                                       const T* class_margins, const T* class_weights, const T* grad_loss,
                                       T* grad_cos) {
  ARCLIGHT_CHECK(grad_loss != nullptr && grad_cos != nullptr, "arc_margin_cross_entropy_backward",
                 "expected non-null grad_loss and grad_cos");
  detail::arc_margin_cross_entropy_run("arc_margin_cross_entropy_backward", shape, arc_cfg, ce_cfg, cos, labels,
                                       class_margins, class_weights, static_cast<T*>(nullptr), grad_loss, grad_cos);
}

}  // namespace arclight::kernels::cpu
