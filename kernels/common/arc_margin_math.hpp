// Scalar math of the ArcMargin head family (ArcFace, CosFace, their combination, sub-centers), shared by
// the CPU kernels (kernels/cpu/arc_margin.hpp, kernels/cpu/arc_margin_cross_entropy.hpp) and the CUDA
// kernels. Input is a row of cosine logits c_j = x̂·ŵ_j (already L2-normalised dot products); only the
// target column y is modified:
//   phi(c) = cos(θ + a) − b = c·cos a − sinθ·sin a − b,  sinθ = sqrt(clamp(1 − c², 0, 1)),
// with the θ + a > π fallback (c ≤ th = cos(π − a)): phi = c − mm − b, mm = sin(π − a)·a
// (InsightFace / METHOD.md §4), or easy_margin (margin only where c > 0). Every logit is then scaled by s.
// ArcFace is (a = m, b = 0), CosFace (a = 0, b = m), Combined (a = m, b = additive_margin); a per-class
// margin array replaces m, and margin_scale multiplies every margin (ramp-up). With a = 0 the formulas
// reduce exactly to c − b (th = −1, mm = 0), so one code path serves the whole family.
// Also here: the L2-normalisation formulas (torch.nn.functional.normalize semantics) used before the
// cosine GEMM. ARCLIGHT_HOST_DEVICE, <math.h> only, no exceptions.
#pragma once

#include <math.h>
#include <stdint.h>

#include "kernels/common/macros.hpp"

namespace arclight::kernels {

// Which margin the target logit gets. Values are stable (they cross into CUDA launchers as ints).
enum class MarginKind : int32_t {
  kArcFace = 0,   // cos(θ + m)
  kCosFace = 1,   // cos θ − m
  kCombined = 2,  // cos(θ + m) − additive_margin
};

// The head's hyper-parameters. Plain data (usable on the device); validated by the CPU launchers.
struct ArcMarginConfig {
  MarginKind kind = MarginKind::kArcFace;
  double scale = 30.0;           // s, multiplies every logit (> 0)
  double margin = 0.5;           // m: angular (ArcFace/Combined) or cosine (CosFace); >= 0. Replaced per class
                                 // by the class_margins array when a kernel is given one.
  double additive_margin = 0.0;  // Combined only: cosine margin subtracted after the angular one (>= 0)
  double margin_scale = 1.0;     // ramp-up factor in [0, ∞) multiplying every margin (0 = plain softmax)
  bool easy_margin = false;      // apply the margin only where c > 0 (instead of the θ + m > π fallback)
};

// Shape of a head call: cosine logits are [n, classes * sub_centers] row-major, with the sub_centers
// centres of class j at columns j*K .. j*K+K−1 (the [n, classes, K] view used by sub-center ArcFace);
// the class logits are [n, classes].
struct ArcMarginShape {
  int64_t n = 0;
  int64_t classes = 0;
  int64_t sub_centers = 1;
};

// Floor of sinθ in the derivative: d phi/dc = cos a + sin a · c / sinθ diverges as c → 1. Flooring sinθ
// at 1e-4 keeps the gradient finite (≤ cos a + 1e4·sin a); in float the largest c < 1 is 1 − 6e-8, whose
// sinθ = 3.5e-4 is above the floor, so the floor only acts at c = ±1 exactly (or in double within 5e-9).
inline constexpr double kArcSinThetaFloor = 1e-4;

// Per-target-row constants of the margin (derived once per row: per-class margins differ by row).
template <typename T>
struct ArcMarginTerms {
  T cos_m;     // cos a
  T sin_m;     // sin a
  T th;        // cos(π − a): below it θ + a > π
  T mm;        // sin(π − a)·a: the fallback's offset
  T additive;  // b
  bool easy;   // easy_margin
};

// The margin pair (a, b) of one row. class_margin is the row's m (config.margin or class_margins[y]).
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE ArcMarginTerms<T> arc_margin_terms(MarginKind kind, T class_margin,
                                                                        T additive_margin, T margin_scale,
                                                                        bool easy_margin) {
  T a = T(0);
  T b = T(0);
  if (kind == MarginKind::kArcFace) {
    a = margin_scale * class_margin;
  } else if (kind == MarginKind::kCosFace) {
    b = margin_scale * class_margin;
  } else {
    a = margin_scale * class_margin;
    b = margin_scale * additive_margin;
  }
  const T pi = T(3.14159265358979323846);
  ArcMarginTerms<T> t;
  t.cos_m = ::cos(a);
  t.sin_m = ::sin(a);
  t.th = ::cos(pi - a);
  t.mm = ::sin(pi - a) * a;
  t.additive = b;
  t.easy = easy_margin;
  return t;
}

// sinθ = sqrt(clamp(1 − c², 0, 1)): the clamp keeps sqrt away from negative rounding noise at |c| ≥ 1.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T arc_sin_theta(T c) {
  T s2 = T(1) - c * c;
  s2 = s2 < T(0) ? T(0) : (s2 > T(1) ? T(1) : s2);
  return ::sqrt(s2);
}

// Whether the target cosine takes the margin branch (true) or the fallback / easy pass-through (false).
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE bool arc_margin_main_branch(T c, const ArcMarginTerms<T>& t) {
  return t.easy ? (c > T(0)) : (c > t.th);
}

// phi(c): the target's modified cosine (unscaled). Non-target columns keep c.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T arc_margin_phi(T c, const ArcMarginTerms<T>& t) {
  T phi;
  if (arc_margin_main_branch(c, t)) {
    phi = c * t.cos_m - arc_sin_theta(c) * t.sin_m;
  } else {
    phi = t.easy ? c : c - t.mm;
  }
  return phi - t.additive;
}

// d phi / d c for the target column, both branches: cos a + sin a · c / max(sinθ, floor) on the margin
// branch (d/dc of −sinθ is c/sinθ), 1 on the fallback / easy pass-through.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T arc_margin_phi_grad(T c, const ArcMarginTerms<T>& t) {
  if (!arc_margin_main_branch(c, t)) return T(1);
  T s = arc_sin_theta(c);
  const T floor_s = T(kArcSinThetaFloor);
  s = s < floor_s ? floor_s : s;
  return t.cos_m + t.sin_m * c / s;
}

// Max over the K sub-centre cosines of one class (row points at the class's first centre). Writes the
// winning centre's index (the first one on ties) to *arg; the backward routes the gradient there only.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T sub_center_max(const T* row, int64_t k, int64_t* arg) {
  T best = row[0];
  int64_t best_i = 0;
  for (int64_t i = 1; i < k; ++i) {
    if (row[i] > best) {
      best = row[i];
      best_i = i;
    }
  }
  *arg = best_i;
  return best;
}

// ---- L2 normalisation: y = x / max(‖x‖, eps) (torch.nn.functional.normalize) ----------------------

inline constexpr double kL2NormalizeDefaultEps = 1e-12;

// max(sqrt(sumsq), eps): the divisor of a row.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T l2_norm_clamped(T sumsq, T eps) {
  T n = ::sqrt(sumsq);
  return n < eps ? eps : n;
}

// dx_i of y = x / max(‖x‖, eps): (gy_i − y_i·(y·gy)) / ‖x‖ when ‖x‖ > eps, else gy_i / eps (the divisor
// is then the constant eps). dot_y_gy = Σ y_i gy_i, norm = the unclamped ‖x‖.
template <typename T>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE T l2_normalize_grad(T gy, T y, T dot_y_gy, T norm, T eps) {
  return norm > eps ? (gy - y * dot_y_gy) / norm : gy / eps;
}

}  // namespace arclight::kernels
