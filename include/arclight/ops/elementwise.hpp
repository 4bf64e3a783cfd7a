// Elementwise ops with NumPy broadcasting: arithmetic (tensor–tensor and tensor–scalar), unary math,
// clamps, maximum/minimum, where, and comparisons (which return u8 masks and record no gradient).
// Arithmetic works on every dtype; the transcendental functions and every gradient need f32/f64.
// Both operands must have the same dtype (no implicit promotion: an explicit to() says what you mean).
// Backward formulas are written with these same ops, so they are checked by the same gradcheck.
#pragma once

#include <cmath>
#include <optional>
#include <vector>

#include "arclight/ops/reduce.hpp"
#include "kernels/common/elementwise_math.hpp"

namespace arclight::ops {

namespace detail {

// Output = f(a, b) over the broadcast shape of a and b; Out is T unless given (comparisons give u8). On a CUDA
// device the same op runs as the kernel `code` names (kernels/common/elementwise_math.hpp; float32).
template <typename F>
Tensor binary_kernel(const char* name, kernels::EwOp code, const Tensor& a, const Tensor& b, bool floating_only, F f,
                     std::optional<DType> out_dtype = std::nullopt) {
  profiler::Scope profile_scope_(name);
  const Device dev = op_device(name, {&a, &b});
  check_same_dtype(a, b, name);
  Tensor out = empty(broadcast_shapes(a.shape(), b.shape(), name), out_dtype.value_or(a.dtype()), dev);
  if (dev.is_cuda()) {
    cuda::detail::binary(code, out, a, b, name);
    return out;
  }
  auto body = [&]<typename T>() {
    auto op = broadcast_operands<3>({&out, &a, &b});
    if (out_dtype && *out_dtype == DType::u8)
      kernels::cpu::strided_map<std::uint8_t, T, T>(op, [f](T x, T y) { return static_cast<std::uint8_t>(f(x, y)); });
    else
      kernels::cpu::strided_map<T, T, T>(op, [f](T x, T y) { return static_cast<T>(f(x, y)); });
  };
  if (floating_only) dispatch_floating(a.dtype(), name, body);
  else dispatch_all(a.dtype(), name, body);
  return out;
}

template <typename F>
Tensor unary_kernel(const char* name, kernels::EwOp code, kernels::EwParams params, const Tensor& a,
                    bool floating_only, F f) {
  profiler::Scope profile_scope_(name);
  const Device dev = op_device(name, {&a});
  Tensor out = empty(a.shape(), a.dtype(), dev);
  if (dev.is_cuda()) {
    cuda::detail::unary(code, params, out, a, name);
    return out;
  }
  auto body = [&]<typename T>() {
    kernels::cpu::strided_map<T, T>(broadcast_operands<2>({&out, &a}), [f](T x) { return static_cast<T>(f(x)); });
  };
  if (floating_only) dispatch_floating(a.dtype(), name, body);
  else dispatch_all(a.dtype(), name, body);
  return out;
}

// A 0-d operand v of ref's dtype on ref's device.
inline Tensor scalar_like(double v, const Tensor& ref) { return scalar_tensor(v, ref.dtype(), ref.device()); }

}  // namespace detail

// ---- arithmetic ---------------------------------------------------------------------------------

inline Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = detail::binary_kernel("add", kernels::EwOp::kAdd, a, b, false, [](auto x, auto y) { return x + y; });
  autograd::record("add", {a, b}, out, [sa = a.shape(), sb = b.shape()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{sum_to(g[0], sa), sum_to(g[0], sb)};
  });
  return out;
}

Tensor neg(const Tensor& a);

inline Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = detail::binary_kernel("sub", kernels::EwOp::kSub, a, b, false, [](auto x, auto y) { return x - y; });
  autograd::record("sub", {a, b}, out, [sa = a.shape(), sb = b.shape()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{sum_to(g[0], sa), sum_to(neg(g[0]), sb)};
  });
  return out;
}

inline Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = detail::binary_kernel("mul", kernels::EwOp::kMul, a, b, false, [](auto x, auto y) { return x * y; });
  const Tensor ad = a.detach(), bd = b.detach();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  autograd::record("mul", {a, b}, out, [ad, bd, need_a, need_b](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{need_a ? sum_to(mul(g[0], bd), ad.shape()) : Tensor(),
                               need_b ? sum_to(mul(g[0], ad), bd.shape()) : Tensor()};
  });
  return out;
}

inline Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = detail::binary_kernel("div", kernels::EwOp::kDiv, a, b, false, [](auto x, auto y) { return x / y; });
  const Tensor ad = a.detach(), bd = b.detach();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  autograd::record("div", {a, b}, out, [ad, bd, need_a, need_b](const std::vector<Tensor>& g) {
    Tensor ga, gb;
    if (need_a) ga = sum_to(div(g[0], bd), ad.shape());
    if (need_b) gb = sum_to(neg(div(mul(g[0], ad), mul(bd, bd))), bd.shape());
    return std::vector<Tensor>{ga, gb};
  });
  return out;
}

inline Tensor add(const Tensor& a, double s) { return add(a, detail::scalar_like(s, a)); }
inline Tensor sub(const Tensor& a, double s) { return sub(a, detail::scalar_like(s, a)); }
inline Tensor mul(const Tensor& a, double s) { return mul(a, detail::scalar_like(s, a)); }
inline Tensor div(const Tensor& a, double s) { return div(a, detail::scalar_like(s, a)); }
inline Tensor rsub(double s, const Tensor& a) { return sub(detail::scalar_like(s, a), a); }
inline Tensor rdiv(double s, const Tensor& a) { return div(detail::scalar_like(s, a), a); }

inline Tensor neg(const Tensor& a) {
  Tensor out = detail::unary_kernel("neg", kernels::EwOp::kNeg, {}, a, false, [](auto x) { return -x; });
  autograd::record("neg", {a}, out, [](const std::vector<Tensor>& g) { return std::vector<Tensor>{neg(g[0])}; });
  return out;
}

// ---- unary math ---------------------------------------------------------------------------------

inline Tensor exp(const Tensor& a) {
  Tensor out = detail::unary_kernel("exp", kernels::EwOp::kExp, {}, a, true, [](auto x) { return std::exp(x); });
  autograd::record("exp", {a}, out, [y = out.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{mul(g[0], y)};
  });
  return out;
}

inline Tensor log(const Tensor& a) {
  Tensor out = detail::unary_kernel("log", kernels::EwOp::kLog, {}, a, true, [](auto x) { return std::log(x); });
  autograd::record("log", {a}, out, [x = a.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{div(g[0], x)};
  });
  return out;
}

inline Tensor sqrt(const Tensor& a) {
  Tensor out = detail::unary_kernel("sqrt", kernels::EwOp::kSqrt, {}, a, true, [](auto x) { return std::sqrt(x); });
  autograd::record("sqrt", {a}, out, [y = out.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{div(g[0], mul(y, 2.0))};
  });
  return out;
}

inline Tensor rsqrt(const Tensor& a) {
  Tensor out = detail::unary_kernel("rsqrt", kernels::EwOp::kRsqrt, {}, a, true, [](auto x) { return decltype(x)(1) / std::sqrt(x); });
  autograd::record("rsqrt", {a}, out, [y = out.detach()](const std::vector<Tensor>& g) {
    // d/dx x^(-1/2) = -1/2 · y³
    return std::vector<Tensor>{mul(g[0], mul(mul(y, mul(y, y)), -0.5))};
  });
  return out;
}

// Sign of x: -1, 0 or 1 (no gradient).
inline Tensor sign(const Tensor& a) {
  return detail::unary_kernel("sign", kernels::EwOp::kSign, {}, a, false, [](auto x) {
    using T = decltype(x);
    return static_cast<T>((T(0) < x) - (x < T(0)));
  });
}

inline Tensor abs(const Tensor& a) {
  Tensor out = detail::unary_kernel("abs", kernels::EwOp::kAbs, {}, a, false, [](auto x) { return x < decltype(x)(0) ? -x : x; });
  autograd::record("abs", {a}, out, [x = a.detach()](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{mul(g[0], sign(x))};
  });
  return out;
}

// x^p for a scalar exponent.
inline Tensor pow(const Tensor& a, double p) {
  profiler::Scope profile_scope_("pow");
  Tensor out = detail::unary_kernel("pow", kernels::EwOp::kPowScalar, {static_cast<float>(p), 0.f}, a, true, [p](auto x) { return std::pow(x, static_cast<decltype(x)>(p)); });
  autograd::record("pow", {a}, out, [x = a.detach(), p](const std::vector<Tensor>& g) {
    if (p == 0.0) return std::vector<Tensor>{zeros_like(g[0])};
    return std::vector<Tensor>{mul(g[0], mul(pow(x, p - 1.0), p))};
  });
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
namespace detail {
Tensor pow_zero_base_mask(const Tensor& a, const Tensor& b);
}

// a^b elementwise with broadcasting. The exponent's gradient is g·a^b·log a, taken as 0 where a = 0
// and b ≥ 0 (the limit), as PyTorch does.
inline Tensor pow(const Tensor& a, const Tensor& b) {
  profiler::Scope profile_scope_("pow");
  Tensor out = detail::binary_kernel("pow", kernels::EwOp::kPow, a, b, true, [](auto x, auto y) { return std::pow(x, y); });
  const Tensor ad = a.detach(), bd = b.detach(), y = out.detach();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  autograd::record("pow", {a, b}, out, [ad, bd, y, need_a, need_b](const std::vector<Tensor>& g) {
    Tensor ga, gb;
    if (need_a) ga = sum_to(mul(g[0], mul(bd, pow(ad, sub(bd, 1.0)))), ad.shape());
    if (need_b) {
      Tensor full = mul(g[0], mul(y, log(ad)));
      Tensor zero_base = detail::pow_zero_base_mask(ad, bd);
      gb = sum_to(where(zero_base, zeros_like(full), full), bd.shape());
    }
    return std::vector<Tensor>{ga, gb};
  });
  return out;
}

// ---- clamps and extrema -------------------------------------------------------------------------

// Clamps into [lo, hi] (either bound optional). Gradient passes where lo ≤ x ≤ hi.
inline Tensor clamp(const Tensor& a, std::optional<double> lo, std::optional<double> hi) {
  profiler::Scope profile_scope_("clamp");
  ARCLIGHT_CHECK(!(lo && hi && *lo > *hi), "clamp", "lower bound ", *lo, " is above upper bound ", *hi);
  const double l = lo.value_or(-INFINITY), h = hi.value_or(INFINITY);
  Tensor out = detail::unary_kernel("clamp", kernels::EwOp::kClamp, {static_cast<float>(l), static_cast<float>(h)}, a, false, [l, h](auto x) {
    using T = decltype(x);
    if (x != x) return x;  // NaN passes through
    const double v = static_cast<double>(x);
    return v < l ? static_cast<T>(l) : (v > h ? static_cast<T>(h) : x);
  });
  autograd::record("clamp", {a}, out, [x = a.detach(), l, h](const std::vector<Tensor>& g) {
    Tensor mask = detail::unary_kernel("clamp backward", kernels::EwOp::kClampPass, {static_cast<float>(l), static_cast<float>(h)}, x, true, [l, h](auto v) {
      using T = decltype(v);
      return static_cast<T>(static_cast<double>(v) >= l && static_cast<double>(v) <= h ? 1 : 0);
    });
    return std::vector<Tensor>{mul(g[0], mask)};
  });
  return out;
}
inline Tensor clamp_min(const Tensor& a, double lo) { return clamp(a, lo, std::nullopt); }
inline Tensor clamp_max(const Tensor& a, double hi) { return clamp(a, std::nullopt, hi); }

namespace detail {
// Elementwise max/min; on ties each side gets half the gradient (as PyTorch).
template <bool Max>
Tensor extreme2(const Tensor& a, const Tensor& b, const char* name) {
  Tensor out = binary_kernel(name, Max ? kernels::EwOp::kMaximum : kernels::EwOp::kMinimum, a, b, false, [](auto x, auto y) {
    if (x != x) return x;
    if (y != y) return y;
    return Max ? (x > y ? x : y) : (x < y ? x : y);
  });
  const Tensor ad = a.detach(), bd = b.detach();
  autograd::record(name, {a, b}, out, [ad, bd](const std::vector<Tensor>& g) {
    Tensor wa = binary_kernel("maximum backward", Max ? kernels::EwOp::kMaxShare : kernels::EwOp::kMinShare, ad, bd, true, [](auto x, auto y) {
      using T = decltype(x);
      return x == y ? T(0.5) : ((Max ? x > y : x < y) ? T(1) : T(0));
    });
    Tensor ga = mul(g[0], wa);
    return std::vector<Tensor>{sum_to(ga, ad.shape()), sum_to(sub(g[0], ga), bd.shape())};
  });
  return out;
}
}  // namespace detail

inline Tensor maximum(const Tensor& a, const Tensor& b) { return detail::extreme2<true>(a, b, "maximum"); }
inline Tensor minimum(const Tensor& a, const Tensor& b) { return detail::extreme2<false>(a, b, "minimum"); }

// ---- comparisons (u8 masks, no gradient) --------------------------------------------------------

#define ARCLIGHT_COMPARISON(name, code, expr)                                                                 \
  inline Tensor name(const Tensor& a, const Tensor& b) {                                                      \
    return detail::binary_kernel(#name, kernels::EwOp::code, a, b, false, [](auto x, auto y) { return expr; }, \
                                 DType::u8);                                                                  \
  }                                                                                                           \
  inline Tensor name(const Tensor& a, double s) { return name(a, detail::scalar_like(s, a)); }
ARCLIGHT_COMPARISON(eq, kEq, x == y)
ARCLIGHT_COMPARISON(ne, kNe, x != y)
ARCLIGHT_COMPARISON(lt, kLt, x < y)
ARCLIGHT_COMPARISON(le, kLe, x <= y)
ARCLIGHT_COMPARISON(gt, kGt, x > y)
ARCLIGHT_COMPARISON(ge, kGe, x >= y)
#undef ARCLIGHT_COMPARISON

// cond ? a : b elementwise, all three broadcast together. requires: cond is u8 (or bool-like integer).
// Differentiable in a and b.
inline Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  profiler::Scope profile_scope_("where");
  const Device dev = detail::op_device("where", {&cond, &a, &b});
  detail::check_same_dtype(a, b, "where");
  ARCLIGHT_CHECK(cond.dtype() == DType::u8, "where", "condition must be a u8 mask (as comparisons return), got ",
                 cond.str());
  Tensor out = empty(broadcast_shapes(cond.shape(), broadcast_shapes(a.shape(), b.shape(), "where"), "where"), a.dtype(),
                     dev);
  if (dev.is_cuda()) {
    cuda::detail::where(out, cond, a, b);
  } else {
    dispatch_all(a.dtype(), "where", [&]<typename T>() {
      kernels::cpu::strided_map<T, std::uint8_t, T, T>(detail::broadcast_operands<4>({&out, &cond, &a, &b}),
                                                       [](std::uint8_t c, T x, T y) { return c ? x : y; });
    });
  }
  autograd::record("where", {a, b}, out, [c = cond.detach(), sa = a.shape(), sb = b.shape()](const std::vector<Tensor>& g) {
    Tensor z = zeros({}, g[0].dtype(), g[0].device());
    return std::vector<Tensor>{sum_to(where(c, g[0], z), sa), sum_to(where(c, z, g[0]), sb)};
  });
  return out;
}

namespace detail {
// Mask of positions where the base is 0 and the exponent ≥ 0 (the exponent's gradient is 0 there).
inline Tensor pow_zero_base_mask(const Tensor& a, const Tensor& b) {
  return binary_kernel("pow backward", kernels::EwOp::kPowZeroBase, a, b, true, [](auto x, auto y) { return x == 0 && y >= 0; }, DType::u8);
}
}  // namespace detail

// ---- in-place updates (for optimizers and buffers; refused on tensors in a recording graph) -----

namespace detail {
template <typename F>
Tensor& inplace_binary(const char* name, kernels::EwOp code, Tensor& a, const Tensor& b, F f) {
  profiler::Scope profile_scope_(name);
  const Device dev = op_device(name, {&a, &b});
  check_same_dtype(a, b, name);
  ARCLIGHT_CHECK(!(grad_enabled() && a.requires_grad()), name, "in-place update of ", a.str(),
                 " which requires grad; wrap it in NoGradGuard");
  ARCLIGHT_CHECK(broadcast_shapes(a.shape(), b.shape(), name) == a.shape(), name, b.str(), " does not broadcast to ",
                 a.str());
  if (dev.is_cuda()) {
    cuda::detail::binary(code, a, a, b, name);
    return a;
  }
  dispatch_all(a.dtype(), name, [&]<typename T>() {
    kernels::cpu::strided_map<T, T, T>(broadcast_operands<3>({&a, &a, &b}), [f](T x, T y) { return static_cast<T>(f(x, y)); });
  });
  return a;
}
}  // namespace detail

inline Tensor& add_(Tensor& a, const Tensor& b) { return detail::inplace_binary("add_", kernels::EwOp::kAdd, a, b, [](auto x, auto y) { return x + y; }); }
inline Tensor& sub_(Tensor& a, const Tensor& b) { return detail::inplace_binary("sub_", kernels::EwOp::kSub, a, b, [](auto x, auto y) { return x - y; }); }
inline Tensor& mul_(Tensor& a, const Tensor& b) { return detail::inplace_binary("mul_", kernels::EwOp::kMul, a, b, [](auto x, auto y) { return x * y; }); }
inline Tensor& mul_(Tensor& a, double s) { return mul_(a, detail::scalar_like(s, a)); }
inline Tensor& add_(Tensor& a, double s) { return add_(a, detail::scalar_like(s, a)); }

}  // namespace arclight::ops

// Operators on tensors (ADL finds them in arclight).
namespace arclight {
inline Tensor operator+(const Tensor& a, const Tensor& b) { return ops::add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return ops::sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return ops::mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return ops::div(a, b); }
inline Tensor operator-(const Tensor& a) { return ops::neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return ops::add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return ops::sub(a, s); }
inline Tensor operator*(const Tensor& a, double s) { return ops::mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return ops::div(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return ops::add(a, s); }
inline Tensor operator-(double s, const Tensor& a) { return ops::rsub(s, a); }
inline Tensor operator*(double s, const Tensor& a) { return ops::mul(a, s); }
inline Tensor operator/(double s, const Tensor& a) { return ops::rdiv(s, a); }
}  // namespace arclight
