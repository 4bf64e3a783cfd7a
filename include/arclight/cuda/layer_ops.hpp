// The device side of the layer and head ops (conv, batch norm, activations, squeeze-excite, pooling, weight
// standardisation, GEMM, GeM, the fused ArcMargin + label-smoothing cross-entropy): Tensor-level calls of the
// CUDA launchers, as arclight/cuda/tensor_ops.hpp is for the elementwise core. The ops in include/arclight/ops/
// validate shapes and record the backward; these functions take already-validated, contiguous device tensors,
// fetch workspaces from the caching device allocator and launch on the legacy default stream.
//
// Without ARCLIGHT_WITH_CUDA each function throws "<op>: this build has no CUDA backend" (unreachable: no device
// tensor exists in such a build), so the ops call them without #ifdefs.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "arclight/core/tensor.hpp"
#include "kernels/common/activation_math.hpp"
#include "kernels/common/arc_margin_math.hpp"
#include "kernels/common/conv_shape.hpp"
#include "kernels/common/gem_math.hpp"
#include "kernels/common/optim_math.hpp"
#include "kernels/common/softmax_math.hpp"

namespace arclight::cuda::detail {

#ifdef ARCLIGHT_WITH_CUDA
#define ARCLIGHT_DEVICE_CALL(name, ...) __VA_ARGS__
#else
#define ARCLIGHT_DEVICE_CALL(name, ...) no_backend(name)
#endif

// A device byte buffer of at least `bytes` (for cuDNN workspaces), from the caching allocator.
inline Tensor scratch_bytes(std::size_t bytes, Device dev) {
  return empty({static_cast<std::int64_t>(bytes > 0 ? bytes : 1)}, DType::u8, dev);
}

// ---- pointwise and pooling ------------------------------------------------------------------------------

inline void activation_forward(kernels::Activation act, const Tensor& x, const Tensor& y) {
  ARCLIGHT_DEVICE_CALL("activation", kc::activation_forward(act, x.numel(), ptr<float>(x), ptr<float>(y), nullptr));
}
inline void activation_backward(kernels::Activation act, const Tensor& x, const Tensor& gy, const Tensor& gx) {
  ARCLIGHT_DEVICE_CALL("activation_backward", kc::activation_backward(act, x.numel(), ptr<float>(x), ptr<float>(gy),
                                                                      ptr<float>(gx), nullptr));
}

inline void se_scale_forward(std::int64_t n, std::int64_t c, std::int64_t hw, const Tensor& x, const Tensor& gate,
                             const Tensor& y) {
  ARCLIGHT_DEVICE_CALL("se_scale",
                       kc::se_scale_forward(n, c, hw, ptr<float>(x), ptr<float>(gate), ptr<float>(y), nullptr));
}
inline void se_scale_backward(std::int64_t n, std::int64_t c, std::int64_t hw, const Tensor& x, const Tensor& gate,
                              const Tensor& gy, const Tensor& gx, const Tensor& ggate) {
  ARCLIGHT_DEVICE_CALL("se_scale_backward", kc::se_scale_backward(n, c, hw, ptr<float>(x), ptr<float>(gate),
                                                                  ptr<float>(gy), ptr<float>(gx), ptr<float>(ggate),
                                                                  nullptr));
}

inline void global_avg_pool_forward(std::int64_t planes, std::int64_t hw, const Tensor& x, const Tensor& y) {
  ARCLIGHT_DEVICE_CALL("global_avg_pool",
                       kc::global_avg_pool_forward(planes, hw, ptr<float>(x), ptr<float>(y), nullptr));
}
inline void global_avg_pool_backward(std::int64_t planes, std::int64_t hw, const Tensor& gy, const Tensor& gx) {
  ARCLIGHT_DEVICE_CALL("global_avg_pool_backward",
                       kc::global_avg_pool_backward(planes, hw, ptr<float>(gy), ptr<float>(gx), nullptr));
}

inline void avg_pool2d_forward(const kernels::Pool2dShape& s, const Tensor& x, const Tensor& y, bool include_pad) {
  ARCLIGHT_DEVICE_CALL("avg_pool2d", kc::avg_pool2d_forward(s, ptr<float>(x), ptr<float>(y), include_pad, nullptr));
}
inline void avg_pool2d_backward(const kernels::Pool2dShape& s, const Tensor& gy, const Tensor& gx, bool include_pad) {
  ARCLIGHT_DEVICE_CALL("avg_pool2d_backward",
                       kc::avg_pool2d_backward(s, ptr<float>(gy), ptr<float>(gx), include_pad, nullptr));
}
inline void max_pool2d_forward(const kernels::Pool2dShape& s, const Tensor& x, const Tensor& y, const Tensor& indices) {
  ARCLIGHT_DEVICE_CALL("max_pool2d", kc::max_pool2d_forward(s, ptr<float>(x), ptr<float>(y),
                                                            ptr<std::int64_t>(indices), nullptr));
}
inline void max_pool2d_backward(const kernels::Pool2dShape& s, const Tensor& gy, const Tensor& indices,
                                const Tensor& gx) {
  ARCLIGHT_DEVICE_CALL("max_pool2d_backward", kc::max_pool2d_backward(s, ptr<float>(gy), ptr<std::int64_t>(indices),
                                                                      ptr<float>(gx), nullptr));
}

// ---- batch norm ---------------------------------------------------------------------------------------------

struct BatchNormArgs {
  std::int64_t n = 0, c = 0, inner = 1;
  double eps = 1e-5, momentum = 0.1;
  kernels::Activation act = kernels::Activation::Identity;
};

#ifdef ARCLIGHT_WITH_CUDA
inline kc::BatchNormDims bn_dims(const BatchNormArgs& a) { return {a.n, a.c, a.inner}; }
inline Tensor bn_workspace(const BatchNormArgs& a, Device dev) {
  return scratch(kc::batch_norm_workspace_floats(bn_dims(a)), dev);
}
#endif

inline void batch_norm_forward_train(const BatchNormArgs& a, const Tensor& x, const Tensor& w, const Tensor& b,
                                     const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                                     const Tensor& save_mean, const Tensor& save_invstd) {
  ARCLIGHT_DEVICE_CALL("batch_norm", {
    Tensor ws = bn_workspace(a, x.device());
    kc::batch_norm_forward_train(bn_dims(a), ptr<float>(x), ptr<float>(w), ptr<float>(b), float(a.eps),
                                 float(a.momentum), ptr<float>(running_mean), ptr<float>(running_var), ptr<float>(y),
                                 ptr<float>(save_mean), ptr<float>(save_invstd), a.act, ptr<float>(ws), nullptr);
  });
}
inline void batch_norm_forward_eval(const BatchNormArgs& a, const Tensor& x, const Tensor& w, const Tensor& b,
                                    const Tensor& running_mean, const Tensor& running_var, const Tensor& y) {
  ARCLIGHT_DEVICE_CALL("batch_norm",
                       kc::batch_norm_forward_eval(bn_dims(a), ptr<float>(x), ptr<float>(w), ptr<float>(b),
                                                   float(a.eps), ptr<float>(running_mean), ptr<float>(running_var),
                                                   ptr<float>(y), a.act, nullptr));
}
inline void batch_norm_backward_train(const BatchNormArgs& a, const Tensor& x, const Tensor& gy, const Tensor& w,
                                      const Tensor& b, const Tensor& save_mean, const Tensor& save_invstd,
                                      const Tensor& gx, const Tensor& gw, const Tensor& gb) {
  ARCLIGHT_DEVICE_CALL("batch_norm_backward", {
    Tensor ws = bn_workspace(a, x.device());
    kc::batch_norm_backward_train(bn_dims(a), ptr<float>(x), ptr<float>(gy), ptr<float>(w), ptr<float>(b),
                                  ptr<float>(save_mean), ptr<float>(save_invstd), ptr<float>(gx), ptr<float>(gw),
                                  ptr<float>(gb), a.act, ptr<float>(ws), nullptr);
  });
}
inline void batch_norm_backward_eval(const BatchNormArgs& a, const Tensor& x, const Tensor& gy, const Tensor& w,
                                     const Tensor& b, const Tensor& running_mean, const Tensor& running_var,
                                     const Tensor& gx, const Tensor& gw, const Tensor& gb) {
  ARCLIGHT_DEVICE_CALL("batch_norm_backward", {
    Tensor ws = bn_workspace(a, x.device());
    kc::batch_norm_backward_eval(bn_dims(a), ptr<float>(x), ptr<float>(gy), ptr<float>(w), ptr<float>(b), float(a.eps),
                                 ptr<float>(running_mean), ptr<float>(running_var), ptr<float>(gx), ptr<float>(gw),
                                 ptr<float>(gb), a.act, ptr<float>(ws), nullptr);
  });
}

// ---- scaled weight standardisation ------------------------------------------------------------------------

inline void ws_forward(std::int64_t c_out, std::int64_t fan_in, const Tensor& w, const Tensor& gain, double gamma,
                       double eps, const Tensor& w_hat) {
  ARCLIGHT_DEVICE_CALL("scaled_std_weight", kc::ws_forward(c_out, fan_in, ptr<float>(w), ptr<float>(gain), float(gamma),
                                                           float(eps), ptr<float>(w_hat), nullptr));
}
inline void ws_backward(std::int64_t c_out, std::int64_t fan_in, const Tensor& w, const Tensor& gain, double gamma,
                        double eps, const Tensor& gw_hat, const Tensor& gw, const Tensor& ggain) {
  ARCLIGHT_DEVICE_CALL("scaled_std_weight_backward",
                       kc::ws_backward(c_out, fan_in, ptr<float>(w), ptr<float>(gain), float(gamma), float(eps),
                                       ptr<float>(gw_hat), ptr<float>(gw), ptr<float>(ggain), nullptr));
}

// ---- depthwise convolution (our kernels) --------------------------------------------------------------------

inline void depthwise_forward(const kernels::Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias,
                              const Tensor& y) {
  ARCLIGHT_DEVICE_CALL("conv2d", kc::depthwise_conv2d_forward(s, ptr<float>(x), ptr<float>(w), ptr<float>(bias),
                                                              ptr<float>(y), nullptr));
}
inline void depthwise_backward_data(const kernels::Conv2dShape& s, const Tensor& gy, const Tensor& w,
                                    const Tensor& gx) {
  ARCLIGHT_DEVICE_CALL("conv2d_backward",
                       kc::depthwise_conv2d_backward_data(s, ptr<float>(gy), ptr<float>(w), ptr<float>(gx), nullptr));
}
inline void depthwise_backward_filter(const kernels::Conv2dShape& s, const Tensor& x, const Tensor& gy,
                                      const Tensor& gw, const Tensor& gbias) {
  ARCLIGHT_DEVICE_CALL("conv2d_backward", {
    Tensor ws = scratch(kc::depthwise_conv2d_backward_filter_workspace_floats(s), gy.device());
    kc::depthwise_conv2d_backward_filter(s, ptr<float>(x), ptr<float>(gy), ptr<float>(gw), ptr<float>(gbias),
                                         ptr<float>(ws), nullptr);
  });
}

// ---- convolution (cuDNN) ------------------------------------------------------------------------------------

// y = conv(x, w) (+ bias, float32): x, w, y of `dtype` (f32, or bf16 / f16 under autocast).
inline void conv2d_forward(const kernels::Conv2dShape& s, const Tensor& x, const Tensor& w, const Tensor& bias,
                           const Tensor& y) {
  ARCLIGHT_DEVICE_CALL("conv2d", {
    const std::size_t bytes = kc::conv2d_workspace_bytes(s, x.dtype(), kc::ConvPass::kForward);
    Tensor ws = scratch_bytes(bytes, x.device());
    kc::conv2d_forward(s, x.dtype(), x.raw_data(), w.raw_data(), ptr<float>(bias), y.raw_data(), ws.raw_data(), bytes,
                       nullptr);
  });
}
inline void conv2d_backward_data(const kernels::Conv2dShape& s, const Tensor& gy, const Tensor& w, const Tensor& gx) {
  ARCLIGHT_DEVICE_CALL("conv2d_backward", {
    const std::size_t bytes = kc::conv2d_workspace_bytes(s, gy.dtype(), kc::ConvPass::kBackwardData);
    Tensor ws = scratch_bytes(bytes, gy.device());
    kc::conv2d_backward_data(s, gy.dtype(), gy.raw_data(), w.raw_data(), gx.raw_data(), ws.raw_data(), bytes, nullptr);
  });
}
// gw (of x's dtype) and gbias (float32) may each be undefined to skip.
inline void conv2d_backward_filter(const kernels::Conv2dShape& s, const Tensor& x, const Tensor& gy, const Tensor& gw,
                                   const Tensor& gbias) {
  ARCLIGHT_DEVICE_CALL("conv2d_backward", {
    const std::size_t bytes = kc::conv2d_workspace_bytes(s, x.dtype(), kc::ConvPass::kBackwardFilter);
    Tensor ws = scratch_bytes(bytes, x.device());
    kc::conv2d_backward_filter(s, x.dtype(), x.raw_data(), gy.raw_data(), gw.defined() ? gw.raw_data() : nullptr,
                               ptr<float>(gbias), ws.raw_data(), bytes, nullptr);
  });
}

// ---- GEMM (cuBLAS) -------------------------------------------------------------------------------------------

// C[i] = op(A[i])·op(B[i]) for `batch` row-major matrices (kernels::cuda::gemm_strided_batched's contract);
// A and B of `dtype` (f32, or bf16 / f16 under autocast), C float32.
inline void gemm_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const Tensor& a,
                         std::int64_t lda, std::int64_t stride_a, const Tensor& b, std::int64_t ldb,
                         std::int64_t stride_b, const Tensor& c, std::int64_t batch) {
  ARCLIGHT_DEVICE_CALL("matmul", kc::gemm_strided_batched(trans_a, trans_b, m, n, k, 1.0f, a.raw_data(), lda, stride_a,
                                                          b.raw_data(), ldb, stride_b, 0.0f, ptr<float>(c), n, m * n,
                                                          batch, a.dtype(), nullptr));
}

// ---- GeM ------------------------------------------------------------------------------------------------------

inline void gem_forward(const kernels::GemShape& s, const Tensor& x, const Tensor& p, double eps, const Tensor& y) {
  ARCLIGHT_DEVICE_CALL("gem", kc::gem_forward(s, ptr<float>(x), ptr<float>(p), float(eps), ptr<float>(y), nullptr));
}
inline void gem_backward(const kernels::GemShape& s, const Tensor& x, const Tensor& gy, const Tensor& p, double eps,
                         const Tensor& gx, const Tensor& gp) {
  ARCLIGHT_DEVICE_CALL("gem_backward", {
    Tensor ws = gp.defined() ? scratch(kc::gem_backward_workspace_floats(s), x.device()) : Tensor();
    kc::gem_backward(s, ptr<float>(x), ptr<float>(gy), ptr<float>(p), float(eps), ptr<float>(gx), ptr<float>(gp),
                     ptr<float>(ws), nullptr);
  });
}

// ---- the fused ArcMargin + label-smoothing cross-entropy ------------------------------------------------------

// loss (n floats or 1) and, when grad_cos is defined, d loss/d cos for a unit upstream gradient.
inline void arc_margin_cross_entropy_forward(const kernels::ArcMarginShape& s, const kernels::ArcMarginConfig& arc,
                                             const kernels::CrossEntropyConfig& ce, const Tensor& cos,
                                             const Tensor& labels, const Tensor& class_margins,
                                             const Tensor& class_weights, const Tensor& loss, const Tensor& grad_cos) {
  ARCLIGHT_DEVICE_CALL("arc_margin_cross_entropy", {
    Tensor ws = scratch(kc::cross_entropy_workspace_floats(s.n), cos.device());
    kc::arc_margin_cross_entropy_forward(s, arc, ce, ptr<float>(cos), ptr<std::int64_t>(labels),
                                         ptr<float>(class_margins), ptr<float>(class_weights), ptr<float>(loss),
                                         ptr<float>(grad_cos), ptr<float>(ws), nullptr);
  });
}

// grad_cos = d(Σ grad_loss·loss)/d cos, recomputed from cos (grad_loss: n floats for reduction none, else 1).
inline void arc_margin_cross_entropy_backward(const kernels::ArcMarginShape& s, const kernels::ArcMarginConfig& arc,
                                              const kernels::CrossEntropyConfig& ce, const Tensor& cos,
                                              const Tensor& labels, const Tensor& class_margins,
                                              const Tensor& class_weights, const Tensor& grad_loss,
                                              const Tensor& grad_cos) {
  ARCLIGHT_DEVICE_CALL("arc_margin_cross_entropy_backward", {
    Tensor ws = scratch(kc::cross_entropy_workspace_floats(s.n), cos.device());
    kc::arc_margin_cross_entropy_backward(s, arc, ce, ptr<float>(cos), ptr<std::int64_t>(labels),
                                          ptr<float>(class_margins), ptr<float>(class_weights), ptr<float>(grad_loss),
                                          ptr<float>(grad_cos), ptr<float>(ws), nullptr);
  });
}

// ---- dropout masks -------------------------------------------------------------------------------------------

// A float32 [shape] keep-mask on `dev` drawn from gen exactly as the host's rand(shape, f64, gen) (reserving the
// same block range), so the GPU and the CPU make the same mask from the same generator state.
inline Tensor keep_mask(const Shape& shape, double keep, Generator& gen, Device dev) {
  Tensor mask = empty(shape, DType::f32, dev);
  const std::int64_t n = mask.numel();
  const std::uint64_t first = gen.reserve(static_cast<std::uint64_t>((n * 2 + 3) / 4));
  ARCLIGHT_DEVICE_CALL("dropout", kc::keep_mask(n, gen.seed(), first, keep, ptr<float>(mask), nullptr));
  return mask;
}

// ---- optimizer steps (multi-tensor: one launch per kMaxOptimTensors parameters) --------------------------------

// The float32 device parameters of one multi-tensor optimizer launch, with the config they share.
struct OptimUpdate {
  Tensor param, grad;  // contiguous, same shape
  Tensor buf0, buf1, buf2;  // the rule's state buffers (undefined where unused)
};

#ifdef ARCLIGHT_WITH_CUDA
inline std::vector<kc::OptimTensor> optim_views(const std::vector<OptimUpdate>& updates) {
  std::vector<kc::OptimTensor> v(updates.size());
  for (std::size_t i = 0; i < updates.size(); ++i) {
    v[i].param = ptr<float>(updates[i].param);
    v[i].grad = ptr<float>(updates[i].grad);
    v[i].buf0 = ptr<float>(updates[i].buf0);
    v[i].buf1 = ptr<float>(updates[i].buf1);
    v[i].buf2 = ptr<float>(updates[i].buf2);
    v[i].count = updates[i].param.numel();
  }
  return v;
}
#endif

// AdamW in place on float32 device parameters that share lr, weight decay and update count (buf0 = exp_avg,
// buf1 = exp_avg_sq, buf2 = max_exp_avg_sq under amsgrad).
inline void adamw_step(const std::vector<OptimUpdate>& updates, std::int64_t step, const kernels::AdamWConfig& cfg) {
  ARCLIGHT_DEVICE_CALL("optim::AdamW", {
    const auto v = optim_views(updates);
    kc::adamw_step(v.data(), std::int64_t(v.size()), cfg, step, nullptr, nullptr);
  });
}
// SGD in place on float32 device parameters that share lr, weight decay and first-step flag (buf0 = the momentum
// buffer, undefined when momentum == 0).
inline void sgd_step(const std::vector<OptimUpdate>& updates, bool first_step, const kernels::SgdConfig& cfg) {
  ARCLIGHT_DEVICE_CALL("optim::SGD", {
    const auto v = optim_views(updates);
    kc::sgd_step(v.data(), std::int64_t(v.size()), cfg, first_step, nullptr, nullptr);
  });
}

// Adaptive Gradient Clipping of float32 device parameters' contiguous gradients in place, all in one launch per
// kMaxOptimTensors (units: the first dimension for rank >= 2, else one unit holding the whole tensor).
inline void agc_clip(const std::vector<std::pair<Tensor, Tensor>>& param_grads, const kernels::AgcConfig& cfg) {
  ARCLIGHT_DEVICE_CALL("optim::agc", {
    std::vector<kc::AgcTensor> v;
    v.reserve(param_grads.size());
    for (const auto& [p, g] : param_grads) {
      if (p.numel() == 0) continue;
      kc::AgcTensor t;
      t.param = ptr<float>(p);
      t.grad = ptr<float>(g);
      t.units = p.dim() >= 2 ? p.shape()[0] : 1;
      t.unit_size = p.numel() / t.units;
      v.push_back(t);
    }
    kc::agc_clip(v.data(), std::int64_t(v.size()), cfg, nullptr);
  });
}

#undef ARCLIGHT_DEVICE_CALL

}  // namespace arclight::cuda::detail
