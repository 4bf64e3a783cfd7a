// The ArcMargin head as differentiable ops (METHOD.md §4):
//   cosine_logits(x, w)        cos[n, j] = x̂_n · ŵ_j with rows L2-normalised (F.linear(F.normalize(x), F.normalize(w)))
//   arc_margin(cos, labels)    class logits s·cos with the target column replaced by s·phi(cos_y): ArcFace
//                              cos(θ + m) with the θ + m > π fallback or easy_margin, CosFace cos θ − m, their
//                              combination, per-class margins, a margin ramp-up factor, and sub-centres (the
//                              max over K centres per class).
// Both dispatch to kernels/cpu/arc_margin.hpp (shared math: kernels/common/arc_margin_math.hpp). The fused
// margin + label-smoothing cross-entropy is ops/arc_margin_cross_entropy.hpp.
#pragma once

#include <algorithm>
#include <climits>
#include <string>

#include "arclight/ops/detail/head_checks.hpp"
#include "arclight/ops/linalg.hpp"
#include "arclight/ops/normalize.hpp"
#include "kernels/cpu/arc_margin.hpp"
#include "kernels/cpu/gemm.hpp"

namespace arclight::ops {

using MarginKind = kernels::MarginKind;

// The head's hyper-parameters as the ops take them: kernels::ArcMarginConfig plus the sub-centre count
// (which, with the cosine width, fixes the number of classes).
struct ArcMarginConfig {
  MarginKind kind = MarginKind::kArcFace;
  double scale = 30.0;           // s > 0
  double margin = 0.5;           // m >= 0 (angular for ArcFace/Combined, cosine for CosFace)
  double additive_margin = 0.0;  // Combined only: b >= 0, subtracted after the angular margin
  double margin_scale = 1.0;     // ramp-up factor >= 0 multiplying every margin (0: plain scaled softmax)
  bool easy_margin = false;      // margin only where cos > 0 (instead of the θ + m > π fallback)
  std::int64_t sub_centers = 1;  // K >= 1 centres per class

  kernels::ArcMarginConfig kernel() const {
    kernels::ArcMarginConfig k;
    k.kind = kind;
    k.scale = scale;
    k.margin = margin;
    k.additive_margin = additive_margin;
    k.margin_scale = margin_scale;
    k.easy_margin = easy_margin;
    return k;
  }
};

namespace detail {
// Rows of w normalised at a time by cosine_logits: about 8 MiB of normalised weights, so a 100 000-class head
// never holds a second full copy of its weight (or of its weight's gradient) as a temporary.
template <typename T>
std::int64_t cosine_chunk_rows(std::int64_t rows, std::int64_t d) {
  const std::int64_t r = (std::int64_t(8) << 20) / (d * std::int64_t(sizeof(T)));
  return std::max<std::int64_t>(1, std::min(rows, std::max<std::int64_t>(r, 64)));
}
}  // namespace detail

// cosine_logits: the cosine GEMM of the head, cos = normalize(x) · normalize(w)ᵀ.
// requires: x [N, D] and w [M, D] floating tensors of one dtype and device (CUDA: f32), D > 0, M > 0; eps > 0 (the norm's
//   floor, torch's F.normalize default 1e-12).
// ensures: returns a new [N, M] tensor; records a backward to x and w. Saves only x and w (aliases): the
//   normalised rows of w are recomputed chunk by chunk (detail::cosine_chunk_rows) in forward and backward,
//   and dL/dw is formed chunk by chunk straight into its output, so the temporaries are O(chunk·D + N·D)
//   beside the [N, M] cosines and the [M, D] gradient. Kernels: kernels/cpu/arc_margin.hpp's row
//   L2-normalisation (forward/backward) and BLAS GEMM (kernels/cpu/gemm.hpp) on column blocks of cos.
//   bench/bench_head_ops.cpp measures it against l2_normalize + mm.
inline Tensor cosine_logits(const Tensor& x, const Tensor& w, double eps = kernels::kL2NormalizeDefaultEps) {
  profiler::Scope profile_scope_("cosine_logits");
  const char* op = "cosine_logits";
  const Device dev = detail::op_device(op, {&x, &w});
  detail::check_same_dtype(x, w, op);
  ARCLIGHT_CHECK(is_floating(x.dtype()), op, "expected floating x and w (f32 or f64), got ", x.str());
  ARCLIGHT_CHECK(x.dim() == 2, op, "expected embeddings x of rank 2 [N, D], got ", x.str());
  ARCLIGHT_CHECK(w.dim() == 2, op, "expected class weights w of rank 2 [M, D], got ", w.str());
  ARCLIGHT_CHECK(x.shape()[1] == w.shape()[1], op, "embedding size differs: x ", x.str(), " vs w ", w.str(),
                 " (expected x.shape[1] == w.shape[1])");
  ARCLIGHT_CHECK(x.shape()[1] > 0 && w.shape()[0] > 0, op, "expected D > 0 and M > 0, got x ", x.str(), " w ",
                 w.str());
  ARCLIGHT_CHECK(x.shape()[0] < INT_MAX && w.shape()[0] < INT_MAX && x.shape()[1] < INT_MAX, op,
                 "sizes exceed BLAS's int range: x ", x.str(), " w ", w.str());
  ARCLIGHT_CHECK(eps > 0.0, op, "expected eps > 0, got eps=", eps);
  const std::int64_t n = x.shape()[0], m = w.shape()[0], d = x.shape()[1];
  if (dev.is_cuda()) {
    // On the device: the same function composed of device ops (row norms, division, one cuBLAS GEMM), whose
    // gradients the autograd engine chains. The [M, D] normalised weight is one temporary.
    return mm(l2_normalize(x, 1, eps), transpose(l2_normalize(w, 1, eps), 0, 1));
  }
  const Tensor xc = detail::contiguous_detached(x), wc = detail::contiguous_detached(w);
  Tensor cos = empty({n, m}, x.dtype());
  dispatch_floating(x.dtype(), op, [&]<typename T>() {
    const std::int64_t chunk = detail::cosine_chunk_rows<T>(m, d);
    Tensor xh = empty({n, d}, xc.dtype()), wh = empty({chunk, d}, wc.dtype());
    kernels::cpu::l2_normalize_forward<T>(n, d, xc.data_ptr<T>(), T(eps), xh.data_ptr<T>());
    for (std::int64_t r0 = 0; r0 < m; r0 += chunk) {
      const std::int64_t rows = std::min(chunk, m - r0);
      kernels::cpu::l2_normalize_forward<T>(rows, d, wc.data_ptr<T>() + r0 * d, T(eps), wh.data_ptr<T>());
      // cos[:, r0:r0+rows] = x̂ · ŵ_chunkᵀ
      kernels::cpu::gemm<T>({n, rows, d, false, true, d, d, m}, T(1), xh.data_ptr<T>(), wh.data_ptr<T>(), T(0),
                            cos.data_ptr<T>() + r0);
    }
  });
  const bool need_x = x.requires_grad(), need_w = w.requires_grad();
  autograd::record(op, {x, w}, cos, [xc, wc, n, m, d, eps, need_x, need_w](const std::vector<Tensor>& g) {
    const Tensor gc = detail::contiguous_detached(g[0]);
    Tensor gx, gw;
    dispatch_floating(xc.dtype(), "cosine_logits_backward", [&]<typename T>() {
      const std::int64_t chunk = detail::cosine_chunk_rows<T>(m, d);
      Tensor xh = empty({n, d}, xc.dtype()), wh = empty({chunk, d}, wc.dtype());
      Tensor gwh = need_w ? empty({chunk, d}, wc.dtype()) : Tensor();
      Tensor gxh = need_x ? empty({n, d}, xc.dtype()) : Tensor();
      if (need_w) gw = empty({m, d}, wc.dtype());
      kernels::cpu::l2_normalize_forward<T>(n, d, xc.data_ptr<T>(), T(eps), xh.data_ptr<T>());
      const T* gp = gc.data_ptr<T>();
      for (std::int64_t r0 = 0; r0 < m; r0 += chunk) {
        const std::int64_t rows = std::min(chunk, m - r0);
        if (need_x) {
          // dL/dx̂ += g[:, r0:r0+rows] · ŵ_chunk
          kernels::cpu::l2_normalize_forward<T>(rows, d, wc.data_ptr<T>() + r0 * d, T(eps), wh.data_ptr<T>());
          kernels::cpu::gemm<T>({n, d, rows, false, false, m, d, d}, T(1), gp + r0, wh.data_ptr<T>(),
                                r0 == 0 ? T(0) : T(1), gxh.data_ptr<T>());
        }
        if (need_w) {
          // dL/dŵ_chunk = g[:, r0:r0+rows]ᵀ · x̂, then through the chunk's normalisation into dL/dw.
          kernels::cpu::gemm<T>({rows, d, n, true, false, m, d, d}, T(1), gp + r0, xh.data_ptr<T>(), T(0),
                                gwh.data_ptr<T>());
          kernels::cpu::l2_normalize_backward<T>(rows, d, wc.data_ptr<T>() + r0 * d, gwh.data_ptr<T>(), T(eps),
                                                 gw.data_ptr<T>() + r0 * d);
        }
      }
      if (need_x) {
        gx = empty({n, d}, xc.dtype());
        kernels::cpu::l2_normalize_backward<T>(n, d, xc.data_ptr<T>(), gxh.data_ptr<T>(), T(eps), gx.data_ptr<T>());
      }
    });
    return std::vector<Tensor>{gx, gw};
  });
  return cos;
}

namespace detail {
// Checks cos / labels / class_margins of a head op; returns the kernel shape.
// Every tensor must be on one device; a CUDA device only when the op has a device path (allow_cuda).
inline kernels::ArcMarginShape arc_margin_shape(const Tensor& cos, const Tensor& labels, const ArcMarginConfig& cfg,
                                                const Tensor& class_margins, const char* op, bool allow_cuda = false) {
  const Device dev = op_device(op, {&cos, &labels});
  cuda::detail::check_device(class_margins, dev, op, "class_margins");
  if (!allow_cuda) check_cpu(cos, op);
  if (dev.is_cuda()) cuda::detail::check_f32(cos, op, "cosine logits");
  ARCLIGHT_CHECK(is_floating(cos.dtype()), op, "expected floating cosine logits (f32 or f64), got ", cos.str());
  ARCLIGHT_CHECK(cos.dim() == 2, op, "expected cosine logits of rank 2 [N, classes*sub_centers], got ", cos.str());
  ARCLIGHT_CHECK(cfg.sub_centers >= 1, op, "expected sub_centers >= 1, got sub_centers=", cfg.sub_centers);
  ARCLIGHT_CHECK(cos.shape()[1] > 0 && cos.shape()[1] % cfg.sub_centers == 0, op, "cosine logits ", cos.str(),
                 " do not split into sub_centers=", cfg.sub_centers,
                 " columns per class: expected shape[1] a positive multiple of sub_centers");
  const kernels::ArcMarginShape s{cos.shape()[0], cos.shape()[1] / cfg.sub_centers, cfg.sub_centers};
  check_labels(labels, s.n, op);
  check_class_vector(class_margins, s.classes, cos.dtype(), "class_margins", op);
  return s;
}
}  // namespace detail

// arc_margin: class logits from cosine logits. logits[i, j] = s·c_ij, except the target column
// logits[i, y_i] = s·phi(c_iy); c_ij = max over the sub-centres of class j.
// requires: cos [N, classes·sub_centers] floating; labels i64 [N] in [0, classes); class_margins undefined
//   or [classes] of cos's dtype with values >= 0 (replacing cfg.margin per target class; a constant, no
//   gradient); a valid cfg (s > 0, m >= 0, angular m·margin_scale < π, ...). Else arclight::Error.
// ensures: returns a new [N, classes] tensor; records a backward to cos (finite at |cos| = 1; sub-centres
//   that lost the max get 0).
inline Tensor arc_margin(const Tensor& cos, const Tensor& labels, const ArcMarginConfig& cfg,
                         const Tensor& class_margins = Tensor()) {
  profiler::Scope profile_scope_("arc_margin");
  const char* op = "arc_margin";
  const auto s = detail::arc_margin_shape(cos, labels, cfg, class_margins, op);
  const Tensor cc = detail::contiguous_detached(cos), yc = detail::contiguous_detached(labels),
               mc = detail::contiguous_detached(class_margins);
  const kernels::ArcMarginConfig kcfg = cfg.kernel();
  Tensor logits = empty({s.n, s.classes}, cos.dtype());
  dispatch_floating(cos.dtype(), op, [&]<typename T>() {
    kernels::cpu::arc_margin_forward<T>(s, kcfg, cc.data_ptr<T>(), yc.data_ptr<std::int64_t>(),
                                        detail::optional_ptr<T>(mc), logits.data_ptr<T>());
  });
  autograd::record(op, {cos}, logits, [cc, yc, mc, s, kcfg](const std::vector<Tensor>& g) {
    const Tensor gl = detail::contiguous_detached(g[0]);
    Tensor gc = empty(cc.shape(), cc.dtype());
    dispatch_floating(cc.dtype(), "arc_margin_backward", [&]<typename T>() {
      kernels::cpu::arc_margin_backward<T>(s, kcfg, cc.data_ptr<T>(), yc.data_ptr<std::int64_t>(),
                                           detail::optional_ptr<T>(mc), gl.data_ptr<T>(), gc.data_ptr<T>());
    });
    return std::vector<Tensor>{gc};
  });
  return logits;
}

}  // namespace arclight::ops
