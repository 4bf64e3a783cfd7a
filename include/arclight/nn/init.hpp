// Parameter initialisers with PyTorch's torch.nn.init semantics (fan computation, gains, bounds) and
// timm's trunc_normal_, used by the layers' constructors (Linear: kaiming_uniform_(a = √5) as
// nn.Linear.reset_parameters; ArcMargin: xavier_uniform_; transformer-style layers: trunc_normal_).
// Every function writes its tensor in place under a NoGradGuard (so parameters that require grad can be
// re-initialised), draws from an explicit arclight::Generator (default: the process-wide one) so model
// construction is reproducible from a seed, and returns the tensor.
#pragma once

#include <cmath>
#include <string>

#include "arclight/arclight.hpp"

namespace arclight::nn::init {

enum class FanMode { kFanIn, kFanOut };

struct Fans {
  std::int64_t fan_in;
  std::int64_t fan_out;
};

// PyTorch's _calculate_fan_in_and_fan_out: for a [out, in, k...] tensor, fan_in = in·Πk, fan_out = out·Πk.
// requires: t.dim() >= 2 (else arclight::Error, as PyTorch).
inline Fans compute_fans(const Tensor& t) {
  ARCLIGHT_CHECK(t.defined() && t.dim() >= 2, "nn::init", "fan in and fan out need a tensor of rank >= 2, got ",
                 t.defined() ? t.str() : std::string("an undefined tensor"));
  std::int64_t receptive = 1;
  for (std::int64_t d = 2; d < t.dim(); ++d) receptive *= t.shape()[d];
  return Fans{t.shape()[1] * receptive, t.shape()[0] * receptive};
}

// torch.nn.init.calculate_gain for the nonlinearities our models use: "linear"/"conv*"/"sigmoid" 1,
// "tanh" 5/3, "relu" √2, "leaky_relu" √(2/(1 + a²)), "selu" 3/4.
inline double calculate_gain(const std::string& nonlinearity, double param = 0.01) {
  if (nonlinearity == "linear" || nonlinearity == "sigmoid" || nonlinearity.rfind("conv", 0) == 0) return 1.0;
  if (nonlinearity == "tanh") return 5.0 / 3.0;
  if (nonlinearity == "relu") return std::sqrt(2.0);
  if (nonlinearity == "leaky_relu") return std::sqrt(2.0 / (1.0 + param * param));
  if (nonlinearity == "selu") return 0.75;
  fail("nn::init", "unsupported nonlinearity '", nonlinearity,
       "' (expected linear, conv*, sigmoid, tanh, relu, leaky_relu or selu)");
}

namespace detail {
// Copies a freshly drawn tensor into t, in place, without recording.
inline Tensor& assign_(Tensor& t, const Tensor& values) {
  ARCLIGHT_CHECK(t.defined() && is_floating(t.dtype()), "nn::init", "expected a floating tensor, got ",
                 t.defined() ? t.str() : std::string("an undefined tensor"));
  NoGradGuard ng;
  ops::copy_(t, values);
  return t;
}
}  // namespace detail

// In place: every element = v.
inline Tensor& constant_(Tensor& t, double v) { return detail::assign_(t, full(t.shape(), v, t.dtype())); }
inline Tensor& zeros_(Tensor& t) { return constant_(t, 0.0); }
inline Tensor& ones_(Tensor& t) { return constant_(t, 1.0); }

// In place: U[lo, hi). requires: lo <= hi.
inline Tensor& uniform_(Tensor& t, double lo, double hi, Generator& gen = default_generator()) {
  ARCLIGHT_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "nn::init::uniform_",
                 "expected finite bounds lo <= hi, got [", lo, ", ", hi, ")");
  return detail::assign_(t, rand(t.shape(), t.dtype(), gen, lo, hi));
}

// In place: N(mean, std²). requires: std >= 0.
inline Tensor& normal_(Tensor& t, double mean, double std, Generator& gen = default_generator()) {
  ARCLIGHT_CHECK(std::isfinite(std) && std >= 0.0, "nn::init::normal_", "expected std >= 0, got std=", std);
  return detail::assign_(t, randn(t.shape(), t.dtype(), gen, mean, std));
}

// In place: U(−b, b), b = gain·√(6 / (fan_in + fan_out)) (Glorot & Bengio 2010; torch's xavier_uniform_).
inline Tensor& xavier_uniform_(Tensor& t, double gain = 1.0, Generator& gen = default_generator()) {
  const Fans f = compute_fans(t);
  const double bound = gain * std::sqrt(6.0 / double(f.fan_in + f.fan_out));
  return uniform_(t, -bound, bound, gen);
}

// In place: N(0, std²), std = gain·√(2 / (fan_in + fan_out)).
inline Tensor& xavier_normal_(Tensor& t, double gain = 1.0, Generator& gen = default_generator()) {
  const Fans f = compute_fans(t);
  return normal_(t, 0.0, gain * std::sqrt(2.0 / double(f.fan_in + f.fan_out)), gen);
}

// In place: U(−b, b), b = gain(nonlinearity, a)·√(3 / fan) (He et al. 2015; torch's kaiming_uniform_).
// nn.Linear and nn.Conv2d use a = √5, mode fan_in, leaky_relu, i.e. b = 1/√fan_in.
inline Tensor& kaiming_uniform_(Tensor& t, double a = 0.0, FanMode mode = FanMode::kFanIn,
                                const std::string& nonlinearity = "leaky_relu", Generator& gen = default_generator()) {
  const Fans f = compute_fans(t);
  const double fan = double(mode == FanMode::kFanIn ? f.fan_in : f.fan_out);
  ARCLIGHT_CHECK(fan > 0, "nn::init::kaiming_uniform_", "zero fan for ", t.str());
  const double bound = calculate_gain(nonlinearity, a) * std::sqrt(3.0 / fan);
  return uniform_(t, -bound, bound, gen);
}

// In place: N(0, std²), std = gain(nonlinearity, a) / √fan (torch's kaiming_normal_; timm's EfficientNet
// uses mode fan_out, relu for its convolutions).
inline Tensor& kaiming_normal_(Tensor& t, double a = 0.0, FanMode mode = FanMode::kFanIn,
                               const std::string& nonlinearity = "leaky_relu", Generator& gen = default_generator()) {
  const Fans f = compute_fans(t);
  const double fan = double(mode == FanMode::kFanIn ? f.fan_in : f.fan_out);
  ARCLIGHT_CHECK(fan > 0, "nn::init::kaiming_normal_", "zero fan for ", t.str());
  return normal_(t, 0.0, calculate_gain(nonlinearity, a) / std::sqrt(fan), gen);
}

// In place: N(mean, std²) truncated to [a, b] (absolute bounds, as timm's / torch's trunc_normal_), drawn
// exactly by rejection: out-of-range draws are redrawn from the same generator until every element lies
// in [a, b]. requires: std > 0, a < b, and P(a <= X <= b) >= 1e-3 (else arclight::Error: rejection would
// crawl; such intervals are not an initialisation anyone uses).
inline Tensor& trunc_normal_(Tensor& t, double mean = 0.0, double std = 1.0, double a = -2.0, double b = 2.0,
                             Generator& gen = default_generator()) {
  const char* op = "nn::init::trunc_normal_";
  ARCLIGHT_CHECK(std::isfinite(std) && std > 0.0, op, "expected std > 0, got std=", std);
  ARCLIGHT_CHECK(std::isfinite(mean) && a < b, op, "expected a finite mean and bounds a < b, got mean=", mean,
                 " a=", a, " b=", b);
  const auto cdf = [&](double x) { return 0.5 * std::erfc(-(x - mean) / (std * std::sqrt(2.0))); };
  const double mass = cdf(b) - cdf(a);
  ARCLIGHT_CHECK(mass >= 1e-3, op, "the interval [", a, ", ", b, "] holds only ", mass, " of N(", mean, ", ", std,
                 "^2): expected at least 1e-3");
  Tensor draw = randn(t.shape(), DType::f64, gen, mean, std);
  double* v = draw.data_ptr<double>();
  for (std::int64_t i = 0; i < draw.numel(); ++i) {
    while (!(v[i] >= a && v[i] <= b)) v[i] = randn({}, DType::f64, gen, mean, std).item();
  }
  return detail::assign_(t, draw);
}

}  // namespace arclight::nn::init
