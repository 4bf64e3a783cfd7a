// The pointwise operations the op layer runs on a device, named by one enum so a single strided kernel family
// (kernels/cuda/elementwise.cuh) can serve every elementwise op of include/arclight/ops/elementwise.hpp, and
// their scalar math written once (ARCLIGHT_HOST_DEVICE, C math names only) so the CUDA kernels and the host-side
// tests evaluate exactly the same formulas. The CPU ops keep their own (vectorised) lambdas; the CUDA tests
// compare the two.
//
// Semantics follow the CPU ops one for one (PyTorch's):
//   unary:   kCopy x, kNeg −x, kExp, kLog, kSqrt, kRsqrt 1/√x, kAbs, kSign (−1, 0, 1; NaN stays NaN),
//            kPowScalar x^p0, kClamp clamp(x, p0, p1) (p0 = −inf / p1 = +inf mean "no bound"; NaN stays NaN),
//            kClampPass (1 where p0 <= x <= p1, else 0: where clamp passes the gradient).
//   binary:  kAdd, kSub, kMul, kDiv, kPow x^y, kMaximum, kMinimum (NaN wins, as torch.maximum),
//            kGt, kGe, kLt, kLe, kEq, kNe (u8 masks), kMaxShare / kMinShare (the gradient share of the first
//            operand of maximum/minimum: 1 where it wins, ½ on ties, 0 where it loses), kPowZeroBase (u8:
//            x == 0 && y >= 0, pow's backward mask).
#pragma once

#include <math.h>
#include <stdint.h>

#include "kernels/common/macros.hpp"

namespace arclight::kernels {

enum class EwOp : int32_t {
  // unary (one input)
  kCopy = 0,
  kNeg,
  kExp,
  kLog,
  kSqrt,
  kRsqrt,
  kAbs,
  kSign,
  kPowScalar,
  kClamp,
  kClampPass,
  // binary (two inputs)
  kAdd = 32,
  kSub,
  kMul,
  kDiv,
  kPow,
  kMaximum,
  kMinimum,
  kMaxShare,
  kMinShare,
  kGt,  // u8 output from here on
  kGe,
  kLt,
  kLe,
  kEq,
  kNe,
  kPowZeroBase,
};

ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE constexpr bool ew_is_binary(EwOp op) { return int32_t(op) >= int32_t(EwOp::kAdd); }
// Whether the op writes a u8 mask (0/1) instead of a float.
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE constexpr bool ew_writes_mask(EwOp op) {
  return int32_t(op) >= int32_t(EwOp::kGt);
}

// Scalar parameters of the unary ops that take them (pow exponent; clamp bounds).
struct EwParams {
  float p0 = 0.f;
  float p1 = 0.f;
};

template <EwOp Op>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE float ew_unary(float x, EwParams p) {
  if constexpr (Op == EwOp::kCopy) return x;
  else if constexpr (Op == EwOp::kNeg) return -x;
  else if constexpr (Op == EwOp::kExp) return expf(x);
  else if constexpr (Op == EwOp::kLog) return logf(x);
  else if constexpr (Op == EwOp::kSqrt) return sqrtf(x);
  else if constexpr (Op == EwOp::kRsqrt) return 1.f / sqrtf(x);
  else if constexpr (Op == EwOp::kAbs) return x < 0.f ? -x : x;
  else if constexpr (Op == EwOp::kSign) return x > 0.f ? 1.f : (x < 0.f ? -1.f : x);  // 0 → 0, NaN → NaN
  else if constexpr (Op == EwOp::kPowScalar) return powf(x, p.p0);
  else if constexpr (Op == EwOp::kClamp) return x != x ? x : (x < p.p0 ? p.p0 : (x > p.p1 ? p.p1 : x));
  else if constexpr (Op == EwOp::kClampPass) return (x >= p.p0 && x <= p.p1) ? 1.f : 0.f;
  else return x;
}

template <EwOp Op>
ARCLIGHT_HOST_DEVICE ARCLIGHT_INLINE float ew_binary(float x, float y) {
  if constexpr (Op == EwOp::kAdd) return x + y;
  else if constexpr (Op == EwOp::kSub) return x - y;
  else if constexpr (Op == EwOp::kMul) return x * y;
  else if constexpr (Op == EwOp::kDiv) return x / y;
  else if constexpr (Op == EwOp::kPow) return powf(x, y);
  else if constexpr (Op == EwOp::kMaximum) return (x != x || y != y) ? x + y : (x > y ? x : y);
  else if constexpr (Op == EwOp::kMinimum) return (x != x || y != y) ? x + y : (x < y ? x : y);
  else if constexpr (Op == EwOp::kMaxShare) return x > y ? 1.f : (x == y ? 0.5f : 0.f);
  else if constexpr (Op == EwOp::kMinShare) return x < y ? 1.f : (x == y ? 0.5f : 0.f);
  else if constexpr (Op == EwOp::kGt) return x > y ? 1.f : 0.f;
  else if constexpr (Op == EwOp::kGe) return x >= y ? 1.f : 0.f;
  else if constexpr (Op == EwOp::kLt) return x < y ? 1.f : 0.f;
  else if constexpr (Op == EwOp::kLe) return x <= y ? 1.f : 0.f;
  else if constexpr (Op == EwOp::kEq) return x == y ? 1.f : 0.f;
  else if constexpr (Op == EwOp::kNe) return x != y ? 1.f : 0.f;
  else if constexpr (Op == EwOp::kPowZeroBase) return (x == 0.f && y >= 0.f) ? 1.f : 0.f;
  else return x;
}

}  // namespace arclight::kernels
