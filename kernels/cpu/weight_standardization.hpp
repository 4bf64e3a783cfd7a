// Scaled weight standardisation of NFNet's ScaledStdConv2d (Brock et al. 2021, "High-Performance Large-Scale
// Image Recognition Without Normalization"; ../shared/METHOD.md), forward and backward on raw pointers:
//     w_hat[o, k] = gain[o] * gamma * (w[o, k] - mean_o) / sqrt(var_o * fan_in + eps)
// per output channel o over its fan_in = c_in/groups * kh * kw weights, var the biased variance. Since
// var_o * fan_in = sum_k (w - mean)^2, the denominator is the norm of the centred row (plus eps).
// Note on eps: timm's ScaledStdConv2d computes batch_norm(w) * gain * gamma / sqrt(fan_in), i.e.
// sqrt(var + eps') * sqrt(fan_in) in the denominator; that is this formula with eps = eps' * fan_in.
// The op layer standardises the weight with this kernel and hands w_hat to conv2d_forward; the conv's weight
// gradient d w_hat comes back through ws_backward to w and gain. Parallel over output channels; statistics in
// double, so float weights of any fan-in standardise accurately.
#pragma once

#include <cmath>
#include <cstdint>

#include "arclight/core/error.hpp"

namespace arclight::kernels::cpu {

namespace detail {
inline void check_ws(const char* op, std::int64_t c_out, std::int64_t fan_in, double eps, const void* w,
                     const void* out) {
  ARCLIGHT_CHECK(c_out > 0 && fan_in > 0, op, "expected a weight with c_out > 0 and fan_in > 0, got c_out ", c_out,
                 ", fan_in ", fan_in);
  ARCLIGHT_CHECK(eps >= 0.0, op, "eps must be >= 0, got ", eps);
  ARCLIGHT_CHECK(w != nullptr && out != nullptr, op, "weight and output pointers must not be null");
}

// Mean and 1/sqrt(sum (w - mean)^2 + eps) of one row (two-pass, in double).
template <typename T>
void ws_row_stats(const T* row, std::int64_t fan_in, double eps, double& mean, double& inv_denom) {
  double sum = 0.0;
  for (std::int64_t k = 0; k < fan_in; ++k) sum += double(row[k]);
  mean = sum / double(fan_in);
  double ss = 0.0;
  for (std::int64_t k = 0; k < fan_in; ++k) {
    const double u = double(row[k]) - mean;
    ss += u * u;
  }
  inv_denom = 1.0 / std::sqrt(ss + eps);
}
}  // namespace detail

// Forward standardisation.
// Requires: w and w_hat [c_out, fan_in] (w_hat may not alias w), gain [c_out] or null (= 1), eps >= 0
// (eps = 0 with a constant row divides by zero: the caller's choice, NFNet uses eps > 0).
// Ensures: w_hat is overwritten; if mean_out / inv_denom_out are non-null they receive the per-channel mean
// and 1/sqrt(var*fan_in + eps) (in T), which ws_backward does not need but the op may log or reuse.
template <typename T>
void ws_forward(const T* w, const T* gain, T gamma, T eps, std::int64_t c_out, std::int64_t fan_in, T* w_hat,
                T* mean_out = nullptr, T* inv_denom_out = nullptr) {
  constexpr const char* op = "ws_forward";
  detail::check_ws(op, c_out, fan_in, double(eps), w, w_hat);
#pragma omp parallel for schedule(static)
  for (std::int64_t o = 0; o < c_out; ++o) {
    const T* row = w + o * fan_in;
    double mean, inv;
    detail::ws_row_stats(row, fan_in, double(eps), mean, inv);
    const double scale = double(gamma) * (gain ? double(gain[o]) : 1.0) * inv;
    T* out = w_hat + o * fan_in;
    for (std::int64_t k = 0; k < fan_in; ++k) out[k] = T((double(row[k]) - mean) * scale);
    if (mean_out) mean_out[o] = T(mean);
    if (inv_denom_out) inv_denom_out[o] = T(inv);
  }
}

// Backward through the standardisation. With u = w - mean, D = sqrt(sum u^2 + eps), a = gain * gamma and
// g = a * d_w_hat (sum u = 0 removes the mean term of the second part):
//     d_w[k] = (g[k] - mean(g)) / D - u[k] * sum_j(g[j] u[j]) / D^3,     d_gain = gamma * sum_k d_w_hat[k] u[k] / D.
// Requires: w, d_w_hat, d_w [c_out, fan_in] (d_w may not alias the inputs), gain [c_out] or null (= 1, and then
// d_gain must be null), d_gain [c_out] or null (skipped).
// Ensures: d_w and d_gain are overwritten (not accumulated).
template <typename T>
void ws_backward(const T* w, const T* gain, T gamma, T eps, std::int64_t c_out, std::int64_t fan_in,
                 const T* d_w_hat, T* d_w, T* d_gain = nullptr) {
  constexpr const char* op = "ws_backward";
  detail::check_ws(op, c_out, fan_in, double(eps), w, d_w);
  ARCLIGHT_CHECK(d_w_hat != nullptr, op, "the gradient of the standardised weight must not be null");
  ARCLIGHT_CHECK(d_gain == nullptr || gain != nullptr, op, "d_gain requested but no gain was given");
#pragma omp parallel for schedule(static)
  for (std::int64_t o = 0; o < c_out; ++o) {
    const T* row = w + o * fan_in;
    const T* dh = d_w_hat + o * fan_in;
    double mean, inv;
    detail::ws_row_stats(row, fan_in, double(eps), mean, inv);
    const double a = double(gamma) * (gain ? double(gain[o]) : 1.0);
    double sum_dh = 0.0, sum_dh_u = 0.0;
    for (std::int64_t k = 0; k < fan_in; ++k) {
      sum_dh += double(dh[k]);
      sum_dh_u += double(dh[k]) * (double(row[k]) - mean);
    }
    const double mean_g = a * sum_dh / double(fan_in);
    const double proj = a * sum_dh_u * inv * inv * inv;  // sum(g u) / D^3
    T* out = d_w + o * fan_in;
    for (std::int64_t k = 0; k < fan_in; ++k)
      out[k] = T((a * double(dh[k]) - mean_g) * inv - (double(row[k]) - mean) * proj);
    if (d_gain) d_gain[o] = T(double(gamma) * sum_dh_u * inv);
  }
}

}  // namespace arclight::kernels::cpu
