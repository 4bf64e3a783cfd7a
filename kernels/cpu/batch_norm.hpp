// CPU kernels of batch normalisation over x [n, c, inner] (BatchNorm2d: inner = H*W; BatchNorm1d: inner = 1
// for [N, C] or L for [N, C, L]), PyTorch semantics: train mode normalises with the batch statistics (biased
// variance) and updates the running statistics with momentum and the UNBIASED variance
// (running = (1 - momentum) * running + momentum * batch); eval mode normalises with the running statistics.
// Both modes optionally fuse a pointwise activation after the affine transform (BN+act as EfficientNet's
// BatchNormAct2d); the fused backward recomputes the pre-activation from x and the saved statistics instead of
// storing it. Statistics and reductions are in double, parallel over channels (deterministic).
// Defaults in the layers: PyTorch eps 1e-5 / momentum 0.1, TF-ported models eps 1e-3 / momentum 0.01.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "arclight/core/error.hpp"
#include "kernels/common/activation_math.hpp"
#include "kernels/cpu/vec_math.hpp"

namespace arclight::kernels::cpu {

using kernels::Activation;

struct BatchNormShape {
  std::int64_t n = 0, c = 0, inner = 1;
  std::int64_t numel() const { return n * c * inner; }
  std::int64_t per_channel() const { return n * inner; }  // elements reduced per channel
};

inline void check_batch_norm_shape(const BatchNormShape& s, const char* op) {
  ARCLIGHT_CHECK(s.n >= 1 && s.c >= 1 && s.inner >= 1, op, "expected input sizes [n >= 1, c >= 1, inner >= 1], got [",
                 s.n, ", ", s.c, ", ", s.inner, "]");
}

// Builds and validates the shape of a batch norm from the input dims as the op layer sees them: [N, C]
// or [N, C, L] (BatchNorm1d) or [N, C, H, W] (BatchNorm2d); `channels` is the layer's num_features (the size
// of weight, bias and the running statistics). Throws arclight::Error "<op>: ..." on another rank, an empty
// dimension, or a channel mismatch.
inline BatchNormShape make_batch_norm_shape(std::span<const std::int64_t> dims, std::int64_t channels,
                                            const char* op = "batch_norm") {
  ARCLIGHT_CHECK(dims.size() >= 2 && dims.size() <= 4, op,
                 "expected an input of rank 2 [N, C], 3 [N, C, L] or 4 [N, C, H, W], got rank ", dims.size());
  BatchNormShape s{dims[0], dims[1], 1};
  for (std::size_t d = 2; d < dims.size(); ++d) s.inner *= dims[d];
  for (std::size_t d = 0; d < dims.size(); ++d)
    ARCLIGHT_CHECK(dims[d] >= 1, op, "every input dimension must be >= 1, got size ", dims[d], " at dim ", d);
  ARCLIGHT_CHECK(s.c == channels, op, "channel mismatch: input has ", s.c, " channels (dim 1), the layer has ",
                 channels);
  return s;
}

namespace detail {
inline void check_bn_args(const char* op, double eps, const void* x, const void* out) {
  ARCLIGHT_CHECK(eps >= 0.0 && std::isfinite(eps), op, "eps must be finite and >= 0, got ", eps);
  ARCLIGHT_CHECK(x != nullptr && out != nullptr, op, "input and output pointers must not be null");
}

// The rows of channel c: image n's plane starts at (n*c_total + c)*inner.
inline std::int64_t row_offset(const BatchNormShape& s, std::int64_t n, std::int64_t c) { return (n * s.c + c) * s.inner; }

// y[k] = act(x[k]*a + b) over one row; the activation is switched once per row and each case is a plain
// vectorisable loop (float SiLU/Sigmoid use kernels/cpu/vec_math.hpp's exp).
template <typename T>
inline void affine_act_row(Activation act, const T* x, T a, T b, T* y, std::int64_t len) {
  switch (act) {
    case Activation::ReLU:
#pragma omp simd
      for (std::int64_t k = 0; k < len; ++k) {
        const T z = x[k] * a + b;
        y[k] = z > T(0) ? z : T(0);
      }
      break;
    case Activation::SiLU:
#pragma omp simd
      for (std::int64_t k = 0; k < len; ++k) y[k] = act_silu(x[k] * a + b);
      break;
    case Activation::Sigmoid:
#pragma omp simd
      for (std::int64_t k = 0; k < len; ++k) y[k] = act_sigmoid(x[k] * a + b);
      break;
    case Activation::GELU:
      for (std::int64_t k = 0; k < len; ++k) y[k] = gelu(x[k] * a + b);
      break;
    default:
#pragma omp simd
      for (std::int64_t k = 0; k < len; ++k) y[k] = x[k] * a + b;
  }
}

// dz[k] = dy[k]·act'(x[k]*a + b) over one row (dz may alias dy).
template <typename T>
inline void act_grad_row(Activation act, const T* x, const T* dy, T a, T b, T* dz, std::int64_t len) {
  switch (act) {
    case Activation::ReLU:
#pragma omp simd
      for (std::int64_t k = 0; k < len; ++k) dz[k] = x[k] * a + b > T(0) ? dy[k] : T(0);
      break;
    case Activation::SiLU:
#pragma omp simd
      for (std::int64_t k = 0; k < len; ++k) dz[k] = dy[k] * act_silu_grad(x[k] * a + b);
      break;
    case Activation::Sigmoid:
#pragma omp simd
      for (std::int64_t k = 0; k < len; ++k) dz[k] = dy[k] * act_sigmoid_grad(x[k] * a + b);
      break;
    case Activation::GELU:
      for (std::int64_t k = 0; k < len; ++k) dz[k] = dy[k] * gelu_grad(x[k] * a + b);
      break;
    default:
#pragma omp simd
      for (std::int64_t k = 0; k < len; ++k) dz[k] = dy[k];
  }
}

// y = act(x * scale_c + shift_c) over every element (y may alias x). Parallel over (image, channel) rows.
template <typename T>
void bn_apply(const BatchNormShape& s, const T* x, const double* scale, const double* shift, Activation act, T* y) {
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t c = 0; c < s.c; ++c) {
      const std::int64_t o = row_offset(s, n, c);
      affine_act_row(act, x + o, T(scale[c]), T(shift[c]), y + o, s.inner);
    }
}

// Per-channel mean and biased variance in one pass, double accumulation, shifted by the channel's first
// element (sums of x − K and (x − K)² with K close to the mean keep E[d²] − E[d]² free of cancellation).
template <typename T>
void channel_moments(const BatchNormShape& s, std::int64_t c, const T* x, double& mean, double& var) {
  const double K = double(x[row_offset(s, 0, c)]);
  double s1 = 0.0, s2 = 0.0;
  for (std::int64_t n = 0; n < s.n; ++n) {
    const T* xr = x + row_offset(s, n, c);
#pragma omp simd reduction(+ : s1, s2)
    for (std::int64_t k = 0; k < s.inner; ++k) {
      const double d = double(xr[k]) - K;
      s1 += d;
      s2 += d * d;
    }
  }
  const double M = double(s.per_channel());
  const double md = s1 / M;
  mean = K + md;
  var = std::max(0.0, s2 / M - md * md);
}
}  // namespace detail

// Train-mode forward: batch statistics, optional running-statistics update, optional fused activation.
// Requires: x, y [n, c, inner] (y may alias x: in place), n * inner >= 2 (PyTorch's "expected more than 1 value
// per channel when training"), weight/bias [c] or null (= 1 / 0), running_mean/running_var [c] both or neither
// (null: track_running_stats=False), save_mean/save_invstd [c] or null, eps >= 0, 0 <= momentum <= 1.
// Ensures: y = act((x - mean) / sqrt(var + eps) * weight + bias) with the biased batch variance;
// running_mean = (1 - momentum) running_mean + momentum mean and running_var likewise with the unbiased
// variance var * M / (M - 1), M = n * inner (updated in place); save_mean / save_invstd receive the batch mean
// and 1/sqrt(var + eps) for batch_norm_backward_train.
template <typename T>
void batch_norm_forward_train(const BatchNormShape& s, const T* x, const T* weight, const T* bias, T eps, T momentum,
                              T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd,
                              Activation act = Activation::Identity) {
  constexpr const char* op = "batch_norm_forward_train";
  check_batch_norm_shape(s, op);
  detail::check_bn_args(op, double(eps), x, y);
  ARCLIGHT_CHECK(s.per_channel() > 1, op, "expected more than 1 value per channel when training, got input [", s.n,
                 ", ", s.c, ", ", s.inner, "]");
  ARCLIGHT_CHECK(double(momentum) >= 0.0 && double(momentum) <= 1.0, op, "momentum must be in [0, 1], got ",
                 double(momentum));
  ARCLIGHT_CHECK((running_mean == nullptr) == (running_var == nullptr), op,
                 "running_mean and running_var must be given together");
  const double M = double(s.per_channel());
#pragma omp parallel for schedule(static)
  for (std::int64_t c = 0; c < s.c; ++c) {
    double mean = 0.0, var = 0.0;
    detail::channel_moments(s, c, x, mean, var);
    const double invstd = 1.0 / std::sqrt(var + double(eps));
    const double w = weight ? double(weight[c]) : 1.0, b = bias ? double(bias[c]) : 0.0;
    if (save_mean) save_mean[c] = T(mean);
    if (save_invstd) save_invstd[c] = T(invstd);
    if (running_mean) {
      const double mom = double(momentum);
      running_mean[c] = T((1.0 - mom) * double(running_mean[c]) + mom * mean);
      running_var[c] = T((1.0 - mom) * double(running_var[c]) + mom * var * M / (M - 1.0));
    }
    // Normalise the channel right away, while its n·inner values are still in this core's cache.
    const T a = T(invstd * w), sh = T(b - mean * invstd * w);
    for (std::int64_t n = 0; n < s.n; ++n) {
      const std::int64_t o = detail::row_offset(s, n, c);
      detail::affine_act_row(act, x + o, a, sh, y + o, s.inner);
    }
  }
}

// Eval-mode forward: y = act((x - running_mean) / sqrt(running_var + eps) * weight + bias).
// Requires: x, y [n, c, inner] (y may alias x), running_mean/running_var [c], weight/bias [c] or null.
// Ensures: y is overwritten; nothing else changes.
template <typename T>
void batch_norm_forward_eval(const BatchNormShape& s, const T* x, const T* weight, const T* bias, T eps,
                             const T* running_mean, const T* running_var, T* y,
                             Activation act = Activation::Identity) {
  constexpr const char* op = "batch_norm_forward_eval";
  check_batch_norm_shape(s, op);
  detail::check_bn_args(op, double(eps), x, y);
  ARCLIGHT_CHECK(running_mean != nullptr && running_var != nullptr, op,
                 "eval mode needs running_mean and running_var");
  std::vector<double> scale(std::size_t(s.c)), shift(std::size_t(s.c));
  for (std::int64_t c = 0; c < s.c; ++c) {
    const double invstd = 1.0 / std::sqrt(double(running_var[c]) + double(eps));
    const double w = weight ? double(weight[c]) : 1.0, b = bias ? double(bias[c]) : 0.0;
    scale[std::size_t(c)] = invstd * w;
    shift[std::size_t(c)] = b - double(running_mean[c]) * invstd * w;
  }
  detail::bn_apply(s, x, scale.data(), shift.data(), act, y);
}

namespace detail {
// Shared backward: given per-channel mean/invstd (batch ones in train mode, running ones in eval mode),
// dz = dy * act'(z) with z = xhat * w + b = x * (w invstd) + (b - mean w invstd) recomputed; d_weight = sum dz xhat,
// d_bias = sum dz; and dx = w invstd (dz - mean(dz) - xhat mean(dz xhat)) in train mode, dx = w invstd dz in
// eval mode. With an activation and dx requested, dz is first written into dx (so it is evaluated once), then
// dx is finished in place; dx may alias dy (every element reads its own dy before writing).
template <typename T>
void bn_backward(const BatchNormShape& s, const T* x, const T* dy, const T* weight, const T* bias,
                 const double* mean, const double* invstd, bool train, Activation act, T* dx, T* d_weight,
                 T* d_bias) {
  const double M = double(s.per_channel());
  const bool identity = act == Activation::Identity;
#pragma omp parallel for schedule(static)
  for (std::int64_t c = 0; c < s.c; ++c) {
    const double mu = mean[c], is = invstd[c];
    const double w = weight ? double(weight[c]) : 1.0, b = bias ? double(bias[c]) : 0.0;
    const T zs = T(w * is), zb = T(b - mu * w * is);  // z = x * zs + zb
    const T tmu = T(mu), tis = T(is);
    double sum_dz = 0.0, sum_dz_xc = 0.0;  // sum_dz_xc = sum dz (x - mu); sum dz xhat = is * sum_dz_xc
    const bool need_sums = train || d_weight || d_bias;
    for (std::int64_t n = 0; n < s.n && (need_sums || (dx && !identity)); ++n) {
      const std::int64_t o = row_offset(s, n, c);
      const T* xr = x + o;
      const T* dzr = dy + o;
      if (!identity) {
        if (dx) {
          act_grad_row(act, xr, dy + o, zs, zb, dx + o, s.inner);
          dzr = dx + o;
        } else {
          // Only sums wanted: evaluate dz on the fly.
          double s0 = 0.0, s1 = 0.0;
          if (act == Activation::SiLU) {
#pragma omp simd reduction(+ : s0, s1)
            for (std::int64_t k = 0; k < s.inner; ++k) {
              const double dz = double(dy[o + k] * act_silu_grad(xr[k] * zs + zb));
              s0 += dz;
              s1 += dz * (double(xr[k]) - mu);
            }
          } else {
            for (std::int64_t k = 0; k < s.inner; ++k) {
              const double dz = double(dy[o + k] * activation_derivative(act, T(xr[k] * zs + zb)));
              s0 += dz;
              s1 += dz * (double(xr[k]) - mu);
            }
          }
          sum_dz += s0, sum_dz_xc += s1;
          continue;
        }
      }
      if (!need_sums) continue;
      double s0 = 0.0, s1 = 0.0;
#pragma omp simd reduction(+ : s0, s1)
      for (std::int64_t k = 0; k < s.inner; ++k) {
        const double dz = double(dzr[k]);
        s0 += dz;
        s1 += dz * (double(xr[k]) - mu);
      }
      sum_dz += s0, sum_dz_xc += s1;
    }
    const double sum_dz_xhat = sum_dz_xc * is;
    if (d_weight) d_weight[c] = T(sum_dz_xhat);
    if (d_bias) d_bias[c] = T(sum_dz);
    if (!dx) continue;
    const T k = T(w * is);
    const T m_dz = train ? T(sum_dz / M) : T(0), m_dzx = train ? T(sum_dz_xhat / M) : T(0);
    for (std::int64_t n = 0; n < s.n; ++n) {
      const std::int64_t o = row_offset(s, n, c);
      const T* xr = x + o;
      const T* dzr = identity ? dy + o : dx + o;  // with an activation, dx already holds dz
      T* dxr = dx + o;
#pragma omp simd
      for (std::int64_t j = 0; j < s.inner; ++j) dxr[j] = k * (dzr[j] - m_dz - (xr[j] - tmu) * tis * m_dzx);
    }
  }
}
}  // namespace detail

// Train-mode backward, through the batch statistics (and the fused activation, if any).
// Requires: x, dy [n, c, inner] as in the forward, save_mean/save_invstd from batch_norm_forward_train, the same
// weight/bias/act as the forward (bias only matters when act != Identity); dx [n, c, inner] or null (dx may
// alias dy, not x), d_weight/d_bias [c] or null.
// Ensures: dx, d_weight, d_bias are overwritten (not accumulated).
template <typename T>
void batch_norm_backward_train(const BatchNormShape& s, const T* x, const T* dy, const T* weight, const T* bias,
                               const T* save_mean, const T* save_invstd, T* dx, T* d_weight, T* d_bias,
                               Activation act = Activation::Identity) {
  constexpr const char* op = "batch_norm_backward_train";
  check_batch_norm_shape(s, op);
  ARCLIGHT_CHECK(x != nullptr && dy != nullptr && save_mean != nullptr && save_invstd != nullptr, op,
                 "input, output gradient and the saved statistics must not be null");
  std::vector<double> mean(std::size_t(s.c)), invstd(std::size_t(s.c));
  for (std::int64_t c = 0; c < s.c; ++c) {
    mean[std::size_t(c)] = double(save_mean[c]);
    invstd[std::size_t(c)] = double(save_invstd[c]);
  }
  detail::bn_backward(s, x, dy, weight, bias, mean.data(), invstd.data(), true, act, dx, d_weight, d_bias);
}

// Eval-mode backward (the running statistics are constants).
// Requires: as batch_norm_forward_eval plus dy; dx or null (may alias dy), d_weight/d_bias [c] or null.
// Ensures: dx = dz * weight / sqrt(running_var + eps), d_weight = sum dz xhat, d_bias = sum dz (overwritten).
template <typename T>
void batch_norm_backward_eval(const BatchNormShape& s, const T* x, const T* dy, const T* weight, const T* bias, T eps,
                              const T* running_mean, const T* running_var, T* dx, T* d_weight, T* d_bias,
                              Activation act = Activation::Identity) {
  constexpr const char* op = "batch_norm_backward_eval";
  check_batch_norm_shape(s, op);
  ARCLIGHT_CHECK(x != nullptr && dy != nullptr && running_mean != nullptr && running_var != nullptr, op,
                 "input, output gradient and the running statistics must not be null");
  detail::check_bn_args(op, double(eps), x, dy);
  std::vector<double> mean(std::size_t(s.c)), invstd(std::size_t(s.c));
  for (std::int64_t c = 0; c < s.c; ++c) {
    mean[std::size_t(c)] = double(running_mean[c]);
    invstd[std::size_t(c)] = 1.0 / std::sqrt(double(running_var[c]) + double(eps));
  }
  detail::bn_backward(s, x, dy, weight, bias, mean.data(), invstd.data(), false, act, dx, d_weight, d_bias);
}

}  // namespace arclight::kernels::cpu
