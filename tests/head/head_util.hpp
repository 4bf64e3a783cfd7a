// Shared helpers of the retrieval-head layer tests (tests/head/): leaves built from explicit values,
// cosine matrices whose target entries sit where a test wants them (either side of the θ + m > π branch,
// near |cos| = 1), and slow, obvious reference implementations of the head written with the generic
// differentiable ops (elementwise, log_softmax, amax): the PyTorch reference formula of ArcMargin and
// torch's weighted label-smoothing cross-entropy. Their autograd gradients are the reference for ours.
#pragma once

#include <cmath>
#include <vector>

#include "arclight/nn/arc_margin.hpp"
#include "arclight/nn/gem.hpp"
#include "arclight/nn/linear.hpp"
#include "arclight/nn/loss.hpp"
#include "arclight/ops/arc_margin.hpp"
#include "arclight/ops/arc_margin_cross_entropy.hpp"
#include "arclight/ops/cross_entropy.hpp"
#include "arclight/ops/gem.hpp"
#include "harness.hpp"

namespace arclight::head_test {

using arclight::Tensor;

// A leaf (requires grad) holding `values` with `shape`, of dtype `dtype`.
inline Tensor leaf_from(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f64) {
  Tensor t = from_vector(values, shape, dtype);
  t.set_requires_grad(true);
  return t;
}

inline Tensor labels_from(const std::vector<std::int64_t>& v) {
  return from_vector(v, {std::int64_t(v.size())}, DType::i64);
}

inline std::vector<std::int64_t> random_labels(std::int64_t n, std::int64_t classes, std::uint64_t seed) {
  Generator gen(seed);
  return randint(0, classes, {n}, DType::i64, gen).to_vector<std::int64_t>();
}

// A cosine matrix [n, classes·k] uniform in (lo, hi) whose target entries (centre 0 of class labels[i],
// made the largest centre of that class) are overwritten with target[i % target.size()].
inline std::vector<double> cos_values(std::int64_t n, std::int64_t classes, std::int64_t k,
                                      const std::vector<std::int64_t>& labels, const std::vector<double>& target,
                                      std::uint64_t seed, double lo = -0.8, double hi = 0.8) {
  Generator gen(seed);
  std::vector<double> v = rand({n, classes * k}, DType::f64, gen, lo, hi).to_vector<double>();
  for (std::int64_t i = 0; i < n; ++i) {
    const double t = target[std::size_t(i) % target.size()];
    double* row = v.data() + i * classes * k + labels[std::size_t(i)] * k;
    row[0] = t;
    for (std::int64_t q = 1; q < k; ++q) row[q] = std::min(row[q], t - 0.05);  // centre 0 wins by a margin
  }
  return v;
}

// Per-row margin constants of the reference, formed on the host in double, as [n, 1] tensors.
struct RowTerms {
  Tensor cos_m, sin_m, th, mm, b;
};
inline RowTerms row_terms(const std::vector<std::int64_t>& labels, const ops::ArcMarginConfig& cfg,
                          const std::vector<double>& class_margins, DType dtype) {
  const std::int64_t n = std::int64_t(labels.size());
  std::vector<double> cm(n), sm(n), th(n), mm(n), b(n);
  for (std::int64_t i = 0; i < n; ++i) {
    const double m = class_margins.empty() ? cfg.margin : class_margins[std::size_t(labels[std::size_t(i)])];
    double a = 0, add = 0;
    if (cfg.kind == ops::MarginKind::kArcFace) a = m;
    if (cfg.kind == ops::MarginKind::kCosFace) add = m;
    if (cfg.kind == ops::MarginKind::kCombined) a = m, add = cfg.additive_margin;
    a *= cfg.margin_scale;
    add *= cfg.margin_scale;
    cm[i] = std::cos(a);
    sm[i] = std::sin(a);
    th[i] = std::cos(M_PI - a);
    mm[i] = std::sin(M_PI - a) * a;
    b[i] = add;
  }
  auto col = [&](const std::vector<double>& v) { return from_vector(v, {n, 1}, dtype); };
  return RowTerms{col(cm), col(sm), col(th), col(mm), col(b)};
}

// The ArcMargin reference formula (the seed's PyTorch module), generalised to the family:
//   sine = sqrt(clamp(1 − cos², 0, 1)); phi = cos·cos_m − sine·sin_m;
//   phi = easy ? where(cos > 0, phi, cos) : where(cos > th, phi, cos − mm); phi −= b;
//   out = s·(one_hot·phi + (1 − one_hot)·cos), cos = max over sub-centres.
inline Tensor arc_margin_reference(const Tensor& cos_in, const std::vector<std::int64_t>& labels,
                                   const ops::ArcMarginConfig& cfg, const std::vector<double>& class_margins = {}) {
  using namespace ops;
  const std::int64_t n = cos_in.shape()[0], classes = cos_in.shape()[1] / cfg.sub_centers;
  Tensor c = cfg.sub_centers == 1 ? cos_in : amax(reshape(cos_in, {n, classes, cfg.sub_centers}), {2});
  const RowTerms t = row_terms(labels, cfg, class_margins, c.dtype());
  Tensor sine = sqrt(clamp(rsub(1.0, mul(c, c)), 0.0, 1.0));
  Tensor phi = sub(mul(c, t.cos_m), mul(sine, t.sin_m));
  phi = cfg.easy_margin ? where(gt(c, 0.0), phi, c) : where(gt(c, t.th), phi, sub(c, t.mm));
  phi = sub(phi, t.b);
  Tensor hot = to(one_hot(labels_from(labels), classes), c.dtype());
  return mul(add(mul(hot, phi), mul(rsub(1.0, hot), c)), cfg.scale);
}

// torch's F.cross_entropy(z, y, weight=w, label_smoothing=ε, reduction=r) written out:
//   a_ij = (1 − ε)·w_y·[j = y] + (ε/K)·w_j;  l_i = −Σ_j a_ij·log_softmax(z)_ij;  mean divides by Σ_i w_{y_i}.
inline Tensor cross_entropy_reference(const Tensor& z, const std::vector<std::int64_t>& labels,
                                      const ops::CrossEntropyConfig& cfg, const std::vector<double>& w = {}) {
  using namespace ops;
  const std::int64_t n = z.shape()[0], k = z.shape()[1];
  std::vector<double> a(std::size_t(n * k));
  double wsum = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t y = labels[std::size_t(i)];
    const double wy = w.empty() ? 1.0 : w[std::size_t(y)];
    wsum += wy;
    for (std::int64_t j = 0; j < k; ++j) {
      const double wj = w.empty() ? 1.0 : w[std::size_t(j)];
      a[std::size_t(i * k + j)] = (j == y ? (1 - cfg.label_smoothing) * wy : 0.0) + cfg.label_smoothing / double(k) * wj;
    }
  }
  Tensor rows = neg(sum(mul(from_vector(a, {n, k}, z.dtype()), log_softmax(z, 1)), {1}));
  if (cfg.reduction == Reduction::kNone) return rows;
  if (cfg.reduction == Reduction::kSum) return sum(rows);
  return div(sum(rows), wsum);
}

}  // namespace arclight::head_test
