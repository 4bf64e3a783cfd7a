// CPU kernels of the ArcMargin head family on raw pointers: the margin on cosine logits (ArcFace /
// CosFace / combined, per-class margins, margin ramp-up, easy_margin, sub-centers) with its backward,
// plus the pieces that produce the cosine logits from raw embeddings x[n,d] and class weights w[k,d]:
// row L2-normalisation (and backward) and the cosine GEMM through cblas. The scalar math is
// kernels/common/arc_margin_math.hpp (shared with CUDA). The fused margin + label-smoothing CE path is
// kernels/cpu/arc_margin_cross_entropy.hpp and shares this file's validation and per-row terms.
#pragma once

#include <cblas.h>

#include "kernels/cpu/gemm.hpp"

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "arclight/core/error.hpp"
#include "kernels/common/arc_margin_math.hpp"

namespace arclight::kernels::cpu {

namespace detail {

inline const char* margin_kind_name(MarginKind k) {
  switch (k) {
    case MarginKind::kArcFace:
      return "arcface";
    case MarginKind::kCosFace:
      return "cosface";
    case MarginKind::kCombined:
      return "combined";
  }
  return "unknown";
}

// Checks the shape, the config, the labels and the optional per-class margins of an ArcMargin call.
template <typename T>
void arc_margin_validate(const char* op, const ArcMarginShape& s, const ArcMarginConfig& c, const int64_t* labels,
                         const T* class_margins) {
  ARCLIGHT_CHECK(s.n >= 0, op, "expected n >= 0 rows, got n=", s.n);
  ARCLIGHT_CHECK(s.classes > 0, op, "expected classes > 0, got classes=", s.classes);
  ARCLIGHT_CHECK(s.sub_centers >= 1, op, "expected sub_centers >= 1, got sub_centers=", s.sub_centers);
  const int kind = int(c.kind);
  ARCLIGHT_CHECK(kind >= 0 && kind <= 2, op, "unknown margin kind ", kind,
                 " (expected arcface=0, cosface=1, combined=2)");
  ARCLIGHT_CHECK(std::isfinite(c.scale) && c.scale > 0.0, op, "expected a finite scale s > 0, got s=", c.scale);
  ARCLIGHT_CHECK(std::isfinite(c.margin_scale) && c.margin_scale >= 0.0, op,
                 "expected a finite margin_scale >= 0, got margin_scale=", c.margin_scale);
  ARCLIGHT_CHECK(std::isfinite(c.additive_margin) && c.additive_margin >= 0.0, op,
                 "expected a finite additive_margin >= 0, got additive_margin=", c.additive_margin);
  const bool angular = c.kind != MarginKind::kCosFace;
  // The θ + m > π fallback assumes 0 <= m < π; a larger angular margin is meaningless.
  auto check_margin = [&](double m, int64_t cls) {
    ARCLIGHT_CHECK(std::isfinite(m) && m >= 0.0, op, "expected margin m >= 0 (finite), got m=", m,
                   cls >= 0 ? str_cat(" for class ", cls) : std::string());
    ARCLIGHT_CHECK(!angular || m * c.margin_scale < 3.14159265358979323846, op,
                   "expected the angular margin m*margin_scale < pi for kind ", margin_kind_name(c.kind), ", got m=", m,
                   " margin_scale=", c.margin_scale, cls >= 0 ? str_cat(" for class ", cls) : std::string());
  };
  if (class_margins != nullptr) {
    for (int64_t j = 0; j < s.classes; ++j) check_margin(double(class_margins[j]), j);
  } else {
    check_margin(c.margin, -1);
  }
  if (s.n > 0) ARCLIGHT_CHECK(labels != nullptr, op, "expected a labels array of ", s.n, " entries, got null");
  for (int64_t i = 0; i < s.n; ++i) {
    ARCLIGHT_CHECK(labels[i] >= 0 && labels[i] < s.classes, op, "label ", labels[i], " at row ", i,
                   " is out of range: expected 0 <= label < ", s.classes);
  }
}

// The margin terms of row i (per-class margin if given), formed in double then converted to T.
template <typename T>
ArcMarginTerms<double> arc_margin_row_terms(const ArcMarginConfig& c, const T* class_margins, int64_t label) {
  const double m = class_margins != nullptr ? double(class_margins[label]) : c.margin;
  return arc_margin_terms<double>(c.kind, m, c.additive_margin, c.margin_scale, c.easy_margin);
}

// Class cosine of column j of a row: the plain value, or the max over its K sub-centres.
template <typename T>
inline T class_cosine(const T* row, int64_t j, int64_t k, int64_t* arg) {
  if (k == 1) {
    *arg = 0;
    return row[j];
  }
  return sub_center_max(row + j * k, k, arg);
}

}  // namespace detail

// arc_margin_forward: class logits from cosine logits.
//   logits[i,j] = s·c_ij for j ≠ y_i,  logits[i,y_i] = s·phi(c_iy),  c_ij = max_k cos[i, j*K + k].
// requires: cos holds n*classes*K values, labels n values in [0, classes), class_margins null or
//   `classes` values >= 0 (replacing cfg.margin), logits n*classes values; a valid cfg (else arclight::Error).
// ensures: logits written (not accumulated).
template <typename T>
void arc_margin_forward(const ArcMarginShape& shape, const ArcMarginConfig& cfg, const T* cos, const int64_t* labels,
                        const T* class_margins, T* logits) {
  detail::arc_margin_validate("arc_margin_forward", shape, cfg, labels, class_margins);
  if (shape.n == 0) return;
  ARCLIGHT_CHECK(cos != nullptr && logits != nullptr, "arc_margin_forward", "expected non-null cos and logits");
  const int64_t kc = shape.classes, k = shape.sub_centers;
  const T s = T(cfg.scale);
#pragma omp parallel for schedule(static) if (shape.n * kc * k > 32768)
  for (int64_t i = 0; i < shape.n; ++i) {
    const T* row = cos + i * kc * k;
    T* out = logits + i * kc;
    int64_t arg;
    for (int64_t j = 0; j < kc; ++j) out[j] = s * detail::class_cosine(row, j, k, &arg);
    const int64_t y = labels[i];
    const auto terms = detail::arc_margin_row_terms(cfg, class_margins, y);
    const double c = double(detail::class_cosine(row, y, k, &arg));
    out[y] = T(cfg.scale * arc_margin_phi(c, terms));
  }
}

// arc_margin_backward: grad_cos = d(Σ grad_logits·logits)/d(cos).
//   grad_cos[i, j*K + k] = [k = argmax_k cos[i, j*K + k]] · s · grad_logits[i,j] · (j = y_i ? phi'(c_iy) : 1)
// phi' covers both branches and floors sinθ (finite at |c| = 1). Sub-centres that lost the max get 0.
// requires: as arc_margin_forward; grad_logits n*classes values; grad_cos n*classes*K values.
// ensures: grad_cos written (not accumulated).
template <typename T>
void arc_margin_backward(const ArcMarginShape& shape, const ArcMarginConfig& cfg, const T* cos, const int64_t* labels,
                         const T* class_margins, const T* grad_logits, T* grad_cos) {
  detail::arc_margin_validate("arc_margin_backward", shape, cfg, labels, class_margins);
  if (shape.n == 0) return;
  ARCLIGHT_CHECK(cos != nullptr && grad_logits != nullptr && grad_cos != nullptr, "arc_margin_backward",
                 "expected non-null cos, grad_logits and grad_cos");
  const int64_t kc = shape.classes, k = shape.sub_centers;
  const T s = T(cfg.scale);
#pragma omp parallel for schedule(static) if (shape.n * kc * k > 32768)
  for (int64_t i = 0; i < shape.n; ++i) {
    const T* row = cos + i * kc * k;
    const T* g = grad_logits + i * kc;
    T* out = grad_cos + i * kc * k;
    if (k == 1) {
      for (int64_t j = 0; j < kc; ++j) out[j] = s * g[j];
    } else {
      for (int64_t j = 0; j < kc; ++j) {
        int64_t arg;
        sub_center_max(row + j * k, k, &arg);
        for (int64_t q = 0; q < k; ++q) out[j * k + q] = q == arg ? s * g[j] : T(0);
      }
    }
    const int64_t y = labels[i];
    int64_t arg;
    const double c = double(detail::class_cosine(row, y, k, &arg));
    const auto terms = detail::arc_margin_row_terms(cfg, class_margins, y);
    out[y * k + arg] = T(cfg.scale * double(g[y]) * arc_margin_phi_grad(c, terms));
  }
}

// ---- L2 normalisation of rows: y = x / max(‖x‖, eps) -------------------------------------------

// l2_normalize_forward: requires x and y of rows*dim values (may alias for in place), eps > 0.
// ensures: y written.
template <typename T>
void l2_normalize_forward(int64_t rows, int64_t dim, const T* x, T eps, T* y) {
  ARCLIGHT_CHECK(rows >= 0 && dim > 0, "l2_normalize_forward", "expected rows >= 0 and dim > 0, got rows=", rows,
                 " dim=", dim);
  ARCLIGHT_CHECK(std::isfinite(double(eps)) && eps > T(0), "l2_normalize_forward", "expected eps > 0, got eps=", eps);
  if (rows == 0) return;
  ARCLIGHT_CHECK(x != nullptr && y != nullptr, "l2_normalize_forward", "expected non-null x and y");
#pragma omp parallel for schedule(static) if (rows * dim > 32768)
  for (int64_t i = 0; i < rows; ++i) {
    const T* xi = x + i * dim;
    double ss = 0.0;
    for (int64_t d = 0; d < dim; ++d) ss += double(xi[d]) * double(xi[d]);
    const double inv = 1.0 / l2_norm_clamped(ss, double(eps));
    T* yi = y + i * dim;
    for (int64_t d = 0; d < dim; ++d) yi[d] = T(double(xi[d]) * inv);
  }
}

// l2_normalize_backward: gx = d(Σ gy·y)/dx for y = l2_normalize(x), recomputing ‖x‖ from x.
// requires: x, gy, gx of rows*dim values (gx must not alias x), eps > 0. ensures: gx written.
template <typename T>
void l2_normalize_backward(int64_t rows, int64_t dim, const T* x, const T* gy, T eps, T* gx) {
  ARCLIGHT_CHECK(rows >= 0 && dim > 0, "l2_normalize_backward", "expected rows >= 0 and dim > 0, got rows=", rows,
                 " dim=", dim);
  ARCLIGHT_CHECK(std::isfinite(double(eps)) && eps > T(0), "l2_normalize_backward", "expected eps > 0, got eps=", eps);
  if (rows == 0) return;
  ARCLIGHT_CHECK(x != nullptr && gy != nullptr && gx != nullptr, "l2_normalize_backward",
                 "expected non-null x, gy and gx");
#pragma omp parallel for schedule(static) if (rows * dim > 32768)
  for (int64_t i = 0; i < rows; ++i) {
    const T* xi = x + i * dim;
    const T* gi = gy + i * dim;
    double ss = 0.0;
    for (int64_t d = 0; d < dim; ++d) ss += double(xi[d]) * double(xi[d]);
    const double norm = std::sqrt(ss);
    const double inv = 1.0 / l2_norm_clamped(ss, double(eps));
    double dot = 0.0;  // y·gy
    for (int64_t d = 0; d < dim; ++d) dot += double(xi[d]) * inv * double(gi[d]);
    T* o = gx + i * dim;
    for (int64_t d = 0; d < dim; ++d)
      o[d] = T(l2_normalize_grad(double(gi[d]), double(xi[d]) * inv, dot, norm, double(eps)));
  }
}

// ---- cosine GEMM: cos[n,k] = x̂[n,d] · ŵ[k,d]ᵀ ------------------------------------------------------

struct CosineMatmulShape {
  int64_t n = 0;  // rows of x̂ (batch)
  int64_t k = 0;  // rows of ŵ (classes × sub-centres)
  int64_t d = 0;  // embedding size
};

namespace detail {
inline void cosine_matmul_validate(const char* op, const CosineMatmulShape& s) {
  ARCLIGHT_CHECK(s.n >= 0 && s.k > 0 && s.d > 0, op, "expected n >= 0, k > 0, d > 0, got n=", s.n, " k=", s.k,
                 " d=", s.d);
  constexpr int64_t kMaxBlas = 2147483647;  // cblas takes int dimensions
  ARCLIGHT_CHECK(s.n <= kMaxBlas && s.k <= kMaxBlas && s.d <= kMaxBlas, op,
                 "dimensions exceed cblas int range: n=", s.n, " k=", s.k, " d=", s.d);
}

using cpu::gemm;  // kernels/cpu/gemm.hpp: the one CBLAS entry point
}  // namespace detail

// cosine_matmul_forward: cos = x̂·ŵᵀ. requires: x̂ n*d, ŵ k*d (rows already normalised for true
// cosines), cos n*k. ensures: cos written.
template <typename T>
void cosine_matmul_forward(const CosineMatmulShape& s, const T* x_hat, const T* w_hat, T* cos) {
  detail::cosine_matmul_validate("cosine_matmul_forward", s);
  if (s.n == 0) return;
  ARCLIGHT_CHECK(x_hat != nullptr && w_hat != nullptr && cos != nullptr, "cosine_matmul_forward",
                 "expected non-null x_hat, w_hat and cos");
  detail::gemm<T>(false, true, s.n, s.k, s.d, T(1), x_hat, s.d, w_hat, s.d, T(0), cos, s.k);
}

// cosine_matmul_backward: g_x̂ = g_cos·ŵ (n*d), g_ŵ = g_cosᵀ·x̂ (k*d); either output may be null to skip.
// ensures: outputs written (not accumulated).
template <typename T>
void cosine_matmul_backward(const CosineMatmulShape& s, const T* x_hat, const T* w_hat, const T* g_cos, T* g_x_hat,
                            T* g_w_hat) {
  detail::cosine_matmul_validate("cosine_matmul_backward", s);
  ARCLIGHT_CHECK(x_hat != nullptr && w_hat != nullptr && (s.n == 0 || g_cos != nullptr), "cosine_matmul_backward",
                 "expected non-null x_hat, w_hat and g_cos");
  if (g_x_hat != nullptr && s.n > 0)
    detail::gemm<T>(false, false, s.n, s.d, s.k, T(1), g_cos, s.k, w_hat, s.d, T(0), g_x_hat, s.d);
  if (g_w_hat != nullptr) {
    if (s.n == 0) {
      for (int64_t i = 0; i < s.k * s.d; ++i) g_w_hat[i] = T(0);
    } else {
      detail::gemm<T>(true, false, s.k, s.d, s.n, T(1), g_cos, s.k, x_hat, s.d, T(0), g_w_hat, s.d);
    }
  }
}

}  // namespace arclight::kernels::cpu
