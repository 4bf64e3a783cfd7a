// The CUDA kernels behind the op layer's device dispatch for pointwise math, copies, dtype conversion, fills and
// reductions (declared in kernels/cuda/launchers_ops.hpp; compiled only inside kernels/arclight_cuda.cu).
//
// Strided elementwise (ew_unary / ew_binary / ew_where / ew_copy): the host first simplifies the layout — dims of
// size 1 are dropped and neighbouring dims merged where every operand steps through them as one (stride[d] ==
// stride[d+1]·size[d+1]) — then picks one of three grid-stride kernels, all generic over a small functor that
// does the per-element work given each operand's element offset:
//   - flat:     at most one dim left and every stride 0 or 1 (contiguous or scalar-broadcast operands),
//               numel < 2^31: offset = i·stride in 32-bit arithmetic;
//   - strided32: the general div/mod walk over the sizes in 32-bit arithmetic (numel and every operand's
//               largest offset < 2^31);
//   - strided64: the same in 64-bit arithmetic.
// The scalar math is elementwise_math.hpp's ew_unary<Op> / ew_binary<Op>, one instantiation per op through a host
// switch over EwOp, so device and host references evaluate the same formulas.
//
// Reductions (reduce): the reduced and kept dims are simplified the same way, then, from the layout alone (never
// from the device, so a layout always gets the same summation order and the same bits):
//   - thread-per-output when there are many outputs and outputs are closer in memory than reduced elements
//     (reducing over outer dims: neighbouring threads read neighbouring addresses); a sequential loop each;
//   - warp-per-output when there are many outputs otherwise (or the reduced set is small): lanes stride through
//     the reduced set, then a fixed shuffle tree;
//   - block-chunks for few outputs over a large reduced set: block (chunk c, output k) reduces a fixed
//     kReduceChunk-element slice with a fixed block tree; with one chunk it writes the output directly,
//     otherwise per-chunk partials go to the workspace and a second kernel combines each output's partials in
//     chunk order (warp per output).
// kMax / kMin propagate NaN (torch.amax semantics); no floating-point atomics anywhere.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "arclight/core/dtype.hpp"
#include "arclight/core/error.hpp"
#include "kernels/common/bf16_math.hpp"
#include "kernels/common/elementwise_math.hpp"
#include "kernels/common/f16_math.hpp"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers_ops.hpp"

namespace arclight::kernels::cuda {

// ew_convert takes arclight::DType values as integer codes; the numbering it relies on:
static_assert(int(::arclight::DType::f32) == 0 && int(::arclight::DType::f64) == 1 &&
                  int(::arclight::DType::i32) == 2 && int(::arclight::DType::i64) == 3 &&
                  int(::arclight::DType::u8) == 4 && int(::arclight::DType::f16) == 5 &&
                  int(::arclight::DType::bf16) == 6,
              "ew_convert's dtype codes must follow arclight::DType's numbering");

namespace ew_detail {

constexpr int kEwThreads = 256;
constexpr std::int64_t kInt32Limit = std::int64_t(1) << 31;  // 32-bit paths need every index/offset below this

// ---- host-side layout handling ------------------------------------------------------------------------------

const char* ew_op_name(EwOp op) {
  switch (op) {
    case EwOp::kCopy: return "kCopy";
    case EwOp::kNeg: return "kNeg";
    case EwOp::kExp: return "kExp";
    case EwOp::kLog: return "kLog";
    case EwOp::kSqrt: return "kSqrt";
    case EwOp::kRsqrt: return "kRsqrt";
    case EwOp::kAbs: return "kAbs";
    case EwOp::kSign: return "kSign";
    case EwOp::kPowScalar: return "kPowScalar";
    case EwOp::kClamp: return "kClamp";
    case EwOp::kClampPass: return "kClampPass";
    case EwOp::kAdd: return "kAdd";
    case EwOp::kSub: return "kSub";
    case EwOp::kMul: return "kMul";
    case EwOp::kDiv: return "kDiv";
    case EwOp::kPow: return "kPow";
    case EwOp::kMaximum: return "kMaximum";
    case EwOp::kMinimum: return "kMinimum";
    case EwOp::kMaxShare: return "kMaxShare";
    case EwOp::kMinShare: return "kMinShare";
    case EwOp::kGt: return "kGt";
    case EwOp::kGe: return "kGe";
    case EwOp::kLt: return "kLt";
    case EwOp::kLe: return "kLe";
    case EwOp::kEq: return "kEq";
    case EwOp::kNe: return "kNe";
    case EwOp::kPowZeroBase: return "kPowZeroBase";
  }
  return nullptr;  // not a member of the enum
}

// A layout after simplification, for N operands, with sizes / strides in the index type of the chosen kernel.
template <int N, typename Index>
struct EwIndex {
  int ndim;
  Index sizes[kMaxEwDims];
  Index strides[N][kMaxEwDims];
};

// The simplified layout in 64-bit plus the facts the kernel choice needs.
template <int N>
struct EwPlan {
  EwIndex<N, std::int64_t> ix{};
  std::int64_t numel = 0;
  std::int64_t max_offset[N] = {};  // the largest element offset each operand is addressed at
};

bool aligned(const void* p, int bytes) { return (reinterpret_cast<std::uintptr_t>(p) % std::uintptr_t(bytes)) == 0; }

// Validates `layout` for operands 0..N-1 (ptrs[k] is operand k's base, of elem_bytes[k]-byte elements) and
// simplifies it. Throws arclight::Error("<op>: ...") on: ndim outside [0, kMaxEwDims], a negative size, a negative
// stride, a numel that overflows, a null or misaligned pointer when there is work, an input that shares the
// output's base pointer with a different layout (a partial overlap: only exact in-place is allowed).
template <int N>
EwPlan<N> plan_ew(const char* op, const EwLayout& layout, const void* const (&ptrs)[N], const int (&elem_bytes)[N],
                  const char* const (&names)[N]) {
  ARCLIGHT_CHECK(layout.ndim >= 0 && layout.ndim <= kMaxEwDims, op, "layout.ndim is ", layout.ndim,
                 "; expected 0..", kMaxEwDims, " (the op layer collapses contiguous dims first)");
  EwPlan<N> plan;
  std::int64_t numel = 1;
  for (int d = 0; d < layout.ndim; ++d) {
    const std::int64_t s = layout.sizes[d];
    ARCLIGHT_CHECK(s >= 0, op, "layout.sizes[", d, "] is ", s, "; expected >= 0");
    for (int k = 0; k < N; ++k)
      ARCLIGHT_CHECK(layout.strides[k][d] >= 0, op, "stride of operand ", k, " (", names[k], ") in dim ", d, " is ",
                     layout.strides[k][d], "; negative strides are not supported");
    if (numel != 0 && s != 0)
      ARCLIGHT_CHECK(numel <= (std::int64_t(1) << 62) / s, op, "layout numel overflows 2^62");
    numel *= s;
  }
  plan.numel = numel;
  if (numel == 0) return plan;  // nothing addressed: pointers are not looked at
  for (int k = 0; k < N; ++k) {
    ARCLIGHT_CHECK(ptrs[k] != nullptr, op, "operand ", k, " (", names[k], ") is null; expected a device pointer to ",
                   numel, " addressed elements");
    ARCLIGHT_CHECK(aligned(ptrs[k], elem_bytes[k]), op, "operand ", k, " (", names[k],
                   ") is not aligned to its element size of ", elem_bytes[k], " bytes");
  }
  for (int d = 0; d < layout.ndim; ++d)
    ARCLIGHT_CHECK(layout.sizes[d] == 1 || layout.strides[0][d] != 0, op, "the output (operand 0) has stride 0 in dim ",
                   d, " of size ", layout.sizes[d], "; expected every output element addressed once");
  for (int k = 1; k < N; ++k) {
    if (ptrs[k] != ptrs[0]) continue;
    for (int d = 0; d < layout.ndim; ++d)
      ARCLIGHT_CHECK(layout.sizes[d] == 1 || layout.strides[k][d] == layout.strides[0][d], op, "operand ", k, " (",
                     names[k], ") starts at the output's address but its stride in dim ", d, " is ",
                     layout.strides[k][d], " vs the output's ", layout.strides[0][d],
                     "; expected an exactly in-place layout or no overlap");
  }
  for (int k = 0; k < N; ++k) {
    std::int64_t m = 0;
    for (int d = 0; d < layout.ndim; ++d) {
      const std::int64_t step = layout.strides[k][d];
      ARCLIGHT_CHECK(step == 0 || layout.sizes[d] - 1 <= ((std::int64_t(1) << 62) - m) / step, op, "operand ", k,
                     " (", names[k], ") addresses offsets beyond 2^62");
      m += (layout.sizes[d] - 1) * step;
    }
    plan.max_offset[k] = m;
  }
  // Simplify: drop size-1 dims, merge dim d into the following kept dim when every operand allows it.
  int nd = 0;
  for (int d = 0; d < layout.ndim; ++d) {
    const std::int64_t s = layout.sizes[d];
    if (s == 1) continue;
    bool merge = nd > 0;
    for (int k = 0; k < N && merge; ++k) merge = plan.ix.strides[k][nd - 1] == layout.strides[k][d] * s;
    if (merge) {
      plan.ix.sizes[nd - 1] *= s;
      for (int k = 0; k < N; ++k) plan.ix.strides[k][nd - 1] = layout.strides[k][d];
    } else {
      plan.ix.sizes[nd] = s;
      for (int k = 0; k < N; ++k) plan.ix.strides[k][nd] = layout.strides[k][d];
      ++nd;
    }
  }
  plan.ix.ndim = nd;
  return plan;
}

template <int N, typename Index>
EwIndex<N, Index> narrow_index(const EwIndex<N, std::int64_t>& w) {
  EwIndex<N, Index> r{};
  r.ndim = w.ndim;
  for (int d = 0; d < w.ndim; ++d) {
    r.sizes[d] = Index(w.sizes[d]);
    for (int k = 0; k < N; ++k) r.strides[k][d] = Index(w.strides[k][d]);
  }
  return r;
}

// ---- kernels ------------------------------------------------------------------------------------------------

// Flat path: offset of operand k is i·stride[k] with stride 0 or 1.
template <int N>
struct FlatStrides {
  std::uint32_t s[N];
};

template <int N, typename Fn>
__global__ void __launch_bounds__(kEwThreads) ew_flat_kernel(std::uint32_t numel, FlatStrides<N> st, Fn fn) {
  // numel < 2^31 and the stride below 2^24, so i + stride never wraps in 32 bits.
  const std::uint32_t stride = gridDim.x * blockDim.x;
  for (std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += stride) {
    std::uint32_t off[N];
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = i * st.s[k];
    fn(off);
  }
}

// General path: linear index -> per-operand offsets by div/mod over the sizes (innermost dim last, row-major).
// The outermost dim needs no division: what remains of the index is its coordinate.
template <int N, typename Index, typename Fn>
__global__ void __launch_bounds__(kEwThreads) ew_strided_kernel(Index numel, EwIndex<N, Index> ix, Fn fn) {
  const Index stride = Index(gridDim.x) * Index(blockDim.x);
  for (Index i = Index(blockIdx.x) * Index(blockDim.x) + Index(threadIdx.x); i < numel; i += stride) {
    Index off[N];
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
    Index rem = i;
    // Unrolled over the fixed maximum rank so every sizes / strides index is a constant (kernel-parameter
    // loads, no local-memory copy of the layout); dims at or above ndim are skipped.
#pragma unroll
    for (int d = kMaxEwDims - 1; d > 0; --d) {
      if (d >= ix.ndim) continue;
      const Index q = rem / ix.sizes[d];
      const Index r = rem - q * ix.sizes[d];
      rem = q;
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += r * ix.strides[k][d];
    }
    if (ix.ndim > 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += rem * ix.strides[k][0];
    }
    fn(off);
  }
}

// Per-element functors (operand offsets in, one element written). No __restrict__: in-place calls alias.
template <EwOp Op>
struct UnaryFn {
  float* out;
  const float* a;
  EwParams p;
  template <typename Index>
  __device__ __forceinline__ void operator()(const Index* off) const {
    out[off[0]] = ::arclight::kernels::ew_unary<Op>(a[off[1]], p);
  }
};

template <EwOp Op, typename Out>
struct BinaryFn {
  Out* out;
  const float* a;
  const float* b;
  template <typename Index>
  __device__ __forceinline__ void operator()(const Index* off) const {
    out[off[0]] = Out(::arclight::kernels::ew_binary<Op>(a[off[1]], b[off[2]]));  // masks: 1.f/0.f -> 1/0
  }
};

struct WhereFn {
  float* out;
  const std::uint8_t* cond;
  const float* a;
  const float* b;
  template <typename Index>
  __device__ __forceinline__ void operator()(const Index* off) const {
    out[off[0]] = cond[off[1]] != 0 ? a[off[2]] : b[off[3]];
  }
};

template <typename T>
struct CopyFn {
  T* out;
  const T* a;
  template <typename Index>
  __device__ __forceinline__ void operator()(const Index* off) const {
    out[off[0]] = a[off[1]];
  }
};

// Launches fn over a validated, simplified plan on the cheapest applicable kernel. numel > 0.
template <int N, typename Fn>
void launch_ew(const char* op, const EwPlan<N>& plan, const Fn& fn, Stream stream) {
  const std::int64_t numel = plan.numel;
  const unsigned grid = detail::elementwise_grid(numel, kEwThreads);
  bool flat = plan.ix.ndim <= 1 && numel < kInt32Limit;
  for (int k = 0; k < N && flat; ++k) {
    const std::int64_t s = plan.ix.ndim == 0 ? 0 : plan.ix.strides[k][0];
    flat = s == 0 || s == 1;
  }
  if (flat) {
    FlatStrides<N> st{};
    for (int k = 0; k < N; ++k) st.s[k] = plan.ix.ndim == 0 ? 0u : std::uint32_t(plan.ix.strides[k][0]);
    ew_flat_kernel<N, Fn><<<grid, kEwThreads, 0, stream>>>(std::uint32_t(numel), st, fn);
    detail::check_launch(op);
    return;
  }
  bool small = numel < kInt32Limit;
  for (int k = 0; k < N && small; ++k) small = plan.max_offset[k] < kInt32Limit;
  if (small) {
    ew_strided_kernel<N, std::uint32_t, Fn>
        <<<grid, kEwThreads, 0, stream>>>(std::uint32_t(numel), narrow_index<N, std::uint32_t>(plan.ix), fn);
  } else {
    ew_strided_kernel<N, std::int64_t, Fn><<<grid, kEwThreads, 0, stream>>>(numel, plan.ix, fn);
  }
  detail::check_launch(op);
}

// ---- dtype conversion and fill ------------------------------------------------------------------------------

struct F32ToBf16 {
  __device__ __forceinline__ std::uint16_t operator()(float v) const { return float_to_bf16_bits(v); }
};
struct Bf16ToF32 {
  __device__ __forceinline__ float operator()(std::uint16_t v) const { return bf16_bits_to_float(v); }
};
struct F32ToF16 {
  __device__ __forceinline__ std::uint16_t operator()(float v) const { return float_to_f16_bits(v); }
};
struct F16ToF32 {
  __device__ __forceinline__ float operator()(std::uint16_t v) const { return f16_bits_to_float(v); }
};
template <typename From, typename To>
struct StaticConvert {
  __device__ __forceinline__ To operator()(From v) const { return To(v); }  // round to nearest (as the host)
};

template <typename From, typename To, typename Conv>
__global__ void __launch_bounds__(kEwThreads) convert_kernel(std::int64_t count, const From* in, To* out, Conv conv) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride)
    out[i] = conv(in[i]);
}

template <typename T>
__global__ void __launch_bounds__(kEwThreads) fill_kernel(T* out, std::int64_t count, T value) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) out[i] = value;
}

template <typename From, typename To, typename Conv>
void launch_convert(const char* op, std::int64_t count, void* out, const void* in, Conv conv, Stream stream) {
  ARCLIGHT_CHECK(aligned(in, int(sizeof(From))) && aligned(out, int(sizeof(To))), op,
                 "in / out are not aligned to their element sizes (", sizeof(From), " / ", sizeof(To), " bytes)");
  convert_kernel<From, To, Conv><<<detail::elementwise_grid(count, kEwThreads), kEwThreads, 0, stream>>>(
      count, static_cast<const From*>(in), static_cast<To*>(out), conv);
  detail::check_launch(op);
}

template <typename T>
void launch_fill(const char* op, void* out, std::int64_t count, std::uint64_t bits, Stream stream) {
  fill_kernel<T><<<detail::elementwise_grid(count, kEwThreads), kEwThreads, 0, stream>>>(static_cast<T*>(out), count,
                                                                                          T(bits));
  detail::check_launch(op);
}

}  // namespace ew_detail

// ---- strided elementwise launchers ----------------------------------------------------------------------------

void ew_unary(EwOp op, EwParams params, const EwLayout& layout, float* out, const float* a, Stream stream) {
  using namespace ew_detail;
  const char* where = "cuda::ew_unary";
  const char* name = ew_op_name(op);
  ARCLIGHT_CHECK(name != nullptr, where, "unknown EwOp code ", int(op));
  ARCLIGHT_CHECK(!ew_is_binary(op), where, "op ", name, " is binary; expected a unary op (call ew_binary)");
  const EwPlan<2> plan = plan_ew<2>(where, layout, {out, a}, {4, 4}, {"out", "a"});
  if (plan.numel == 0) return;
  switch (op) {
#define ARCLIGHT_EW_UNARY_CASE(OP) \
  case EwOp::OP: return launch_ew<2>(where, plan, UnaryFn<EwOp::OP>{out, a, params}, stream);
    ARCLIGHT_EW_UNARY_CASE(kCopy)
    ARCLIGHT_EW_UNARY_CASE(kNeg)
    ARCLIGHT_EW_UNARY_CASE(kExp)
    ARCLIGHT_EW_UNARY_CASE(kLog)
    ARCLIGHT_EW_UNARY_CASE(kSqrt)
    ARCLIGHT_EW_UNARY_CASE(kRsqrt)
    ARCLIGHT_EW_UNARY_CASE(kAbs)
    ARCLIGHT_EW_UNARY_CASE(kSign)
    ARCLIGHT_EW_UNARY_CASE(kPowScalar)
    ARCLIGHT_EW_UNARY_CASE(kClamp)
    ARCLIGHT_EW_UNARY_CASE(kClampPass)
#undef ARCLIGHT_EW_UNARY_CASE
    default: break;
  }
  ::arclight::fail(where, "op ", name, " has no unary kernel");
}

void ew_binary(EwOp op, const EwLayout& layout, void* out, const float* a, const float* b, Stream stream) {
  using namespace ew_detail;
  const char* where = "cuda::ew_binary";
  const char* name = ew_op_name(op);
  ARCLIGHT_CHECK(name != nullptr, where, "unknown EwOp code ", int(op));
  ARCLIGHT_CHECK(ew_is_binary(op), where, "op ", name, " is unary; expected a binary op (call ew_unary)");
  const int out_bytes = ew_writes_mask(op) ? 1 : 4;
  const EwPlan<3> plan = plan_ew<3>(where, layout, {out, a, b}, {out_bytes, 4, 4}, {"out", "a", "b"});
  if (plan.numel == 0) return;
  float* out_f = static_cast<float*>(out);
  std::uint8_t* out_m = static_cast<std::uint8_t*>(out);
  switch (op) {
#define ARCLIGHT_EW_BINARY_CASE(OP) \
  case EwOp::OP: return launch_ew<3>(where, plan, BinaryFn<EwOp::OP, float>{out_f, a, b}, stream);
#define ARCLIGHT_EW_MASK_CASE(OP) \
  case EwOp::OP: return launch_ew<3>(where, plan, BinaryFn<EwOp::OP, std::uint8_t>{out_m, a, b}, stream);
    ARCLIGHT_EW_BINARY_CASE(kAdd)
    ARCLIGHT_EW_BINARY_CASE(kSub)
    ARCLIGHT_EW_BINARY_CASE(kMul)
    ARCLIGHT_EW_BINARY_CASE(kDiv)
    ARCLIGHT_EW_BINARY_CASE(kPow)
    ARCLIGHT_EW_BINARY_CASE(kMaximum)
    ARCLIGHT_EW_BINARY_CASE(kMinimum)
    ARCLIGHT_EW_BINARY_CASE(kMaxShare)
    ARCLIGHT_EW_BINARY_CASE(kMinShare)
    ARCLIGHT_EW_MASK_CASE(kGt)
    ARCLIGHT_EW_MASK_CASE(kGe)
    ARCLIGHT_EW_MASK_CASE(kLt)
    ARCLIGHT_EW_MASK_CASE(kLe)
    ARCLIGHT_EW_MASK_CASE(kEq)
    ARCLIGHT_EW_MASK_CASE(kNe)
    ARCLIGHT_EW_MASK_CASE(kPowZeroBase)
#undef ARCLIGHT_EW_BINARY_CASE
#undef ARCLIGHT_EW_MASK_CASE
    default: break;
  }
  ::arclight::fail(where, "op ", name, " has no binary kernel");
}

void ew_where(const EwLayout& layout, float* out, const std::uint8_t* cond, const float* a, const float* b,
              Stream stream) {
  using namespace ew_detail;
  const char* where = "cuda::ew_where";
  const EwPlan<4> plan = plan_ew<4>(where, layout, {out, cond, a, b}, {4, 1, 4, 4}, {"out", "cond", "a", "b"});
  if (plan.numel == 0) return;
  launch_ew<4>(where, plan, WhereFn{out, cond, a, b}, stream);
}

void ew_copy(const EwLayout& layout, void* out, const void* a, int elem_bytes, Stream stream) {
  using namespace ew_detail;
  const char* where = "cuda::ew_copy";
  ARCLIGHT_CHECK(elem_bytes == 1 || elem_bytes == 2 || elem_bytes == 4 || elem_bytes == 8, where, "elem_bytes is ",
                 elem_bytes, "; expected 1, 2, 4 or 8");
  const EwPlan<2> plan = plan_ew<2>(where, layout, {out, a}, {elem_bytes, elem_bytes}, {"out", "a"});
  if (plan.numel == 0) return;
  switch (elem_bytes) {
    case 1:
      return launch_ew<2>(where, plan,
                          CopyFn<std::uint8_t>{static_cast<std::uint8_t*>(out), static_cast<const std::uint8_t*>(a)},
                          stream);
    case 2:
      return launch_ew<2>(
          where, plan, CopyFn<std::uint16_t>{static_cast<std::uint16_t*>(out), static_cast<const std::uint16_t*>(a)},
          stream);
    case 4:
      return launch_ew<2>(
          where, plan, CopyFn<std::uint32_t>{static_cast<std::uint32_t*>(out), static_cast<const std::uint32_t*>(a)},
          stream);
    default:
      return launch_ew<2>(
          where, plan, CopyFn<std::uint64_t>{static_cast<std::uint64_t*>(out), static_cast<const std::uint64_t*>(a)},
          stream);
  }
}

void ew_convert(int out_dtype, int in_dtype, std::int64_t count, void* out, const void* in, Stream stream) {
  using namespace ew_detail;
  const char* where = "cuda::ew_convert";
  constexpr int f32 = int(::arclight::DType::f32), f64 = int(::arclight::DType::f64),
                i64 = int(::arclight::DType::i64), u8 = int(::arclight::DType::u8), f16 = int(::arclight::DType::f16),
                bf16 = int(::arclight::DType::bf16);
  const auto dname = [](int code) -> std::string {
    return code >= 0 && code <= int(::arclight::DType::bf16) ? ::arclight::dtype_name(::arclight::DType(code))
                                                              : ::arclight::str_cat("code ", code);
  };
  const bool supported = (in_dtype == f32 && (out_dtype == bf16 || out_dtype == f16 || out_dtype == f64)) ||
                         (out_dtype == f32 && (in_dtype == bf16 || in_dtype == f16 || in_dtype == f64 ||
                                               in_dtype == i64 || in_dtype == u8));
  ARCLIGHT_CHECK(supported, where, "unsupported conversion ", dname(in_dtype), " -> ", dname(out_dtype),
                 "; expected f32 -> bf16, bf16 -> f32, f32 -> f16, f16 -> f32, f32 -> f64, f64 -> f32, i64 -> f32 "
                 "or u8 -> f32");
  ARCLIGHT_CHECK(count >= 0, where, "count is ", count, "; expected >= 0");
  if (count == 0) return;
  ARCLIGHT_CHECK(out != nullptr && in != nullptr, where, "null out or in for ", count, " elements");
  if (in_dtype == f32 && out_dtype == bf16)
    launch_convert<float, std::uint16_t>(where, count, out, in, F32ToBf16{}, stream);
  else if (in_dtype == bf16)
    launch_convert<std::uint16_t, float>(where, count, out, in, Bf16ToF32{}, stream);
  else if (in_dtype == f32 && out_dtype == f16)
    launch_convert<float, std::uint16_t>(where, count, out, in, F32ToF16{}, stream);
  else if (in_dtype == f16)
    launch_convert<std::uint16_t, float>(where, count, out, in, F16ToF32{}, stream);
  else if (in_dtype == f32)
    launch_convert<float, double>(where, count, out, in, StaticConvert<float, double>{}, stream);
  else if (in_dtype == f64)
    launch_convert<double, float>(where, count, out, in, StaticConvert<double, float>{}, stream);
  else if (in_dtype == u8)  // masks of the comparison ops (0 / 1)
    launch_convert<std::uint8_t, float>(where, count, out, in, StaticConvert<std::uint8_t, float>{}, stream);
  else
    launch_convert<std::int64_t, float>(where, count, out, in, StaticConvert<std::int64_t, float>{}, stream);
}

void ew_fill(void* out, std::int64_t count, int elem_bytes, std::uint64_t bits, Stream stream) {
  using namespace ew_detail;
  const char* where = "cuda::ew_fill";
  ARCLIGHT_CHECK(elem_bytes == 1 || elem_bytes == 2 || elem_bytes == 4 || elem_bytes == 8, where, "elem_bytes is ",
                 elem_bytes, "; expected 1, 2, 4 or 8");
  ARCLIGHT_CHECK(count >= 0, where, "count is ", count, "; expected >= 0");
  if (count == 0) return;
  ARCLIGHT_CHECK(out != nullptr, where, "out is null; expected a device pointer to ", count, " elements");
  ARCLIGHT_CHECK(aligned(out, elem_bytes), where, "out is not aligned to its element size of ", elem_bytes, " bytes");
  switch (elem_bytes) {
    case 1: return launch_fill<std::uint8_t>(where, out, count, bits, stream);
    case 2: return launch_fill<std::uint16_t>(where, out, count, bits, stream);
    case 4: return launch_fill<std::uint32_t>(where, out, count, bits, stream);
    default: return launch_fill<std::uint64_t>(where, out, count, bits, stream);
  }
}

// ---- reductions ---------------------------------------------------------------------------------------------

namespace reduce_detail {

constexpr int kReduceThreads = 256;
// Outputs from which one thread / one warp per output fills the GPU; below, blocks split the reduced set.
constexpr std::int64_t kManyOutputs = 1024;
constexpr std::int64_t kThreadPerOutputMin = 4096;
// Reduced sets up to this size are done by one warp per output even when outputs are few.
constexpr std::int64_t kWarpReduceMax = 1024;
// Elements of one block's slice in the block-chunk path (16 per thread).
constexpr std::int64_t kReduceChunk = 4096;

enum class Path : int { kNone, kFillZero, kThread, kWarp, kChunks };

// Simplified reduction layout (kept dims: output row-major; reduced dims: any order, fixed) plus the plan.
struct RedPlan {
  int n_keep = 0, n_red = 0;
  std::int64_t keep_sizes[kMaxEwDims] = {}, keep_strides[kMaxEwDims] = {};
  std::int64_t red_sizes[kMaxEwDims] = {}, red_strides[kMaxEwDims] = {};
  std::int64_t n_out = 0, n_red_total = 0;
  std::int64_t chunks = 1;  // kChunks: slices per output (partials in the workspace when > 1)
  Path path = Path::kNone;
};

// Drops size-1 dims and merges d into the previous kept dim when stride[prev] == stride[d]·size[d]. For the kept
// dims this preserves the row-major index -> offset map; for the reduced dims it preserves the visiting order.
int simplify_dims(int n, const std::int64_t* sizes, const std::int64_t* strides, std::int64_t* out_sizes,
                  std::int64_t* out_strides) {
  int nd = 0;
  for (int d = 0; d < n; ++d) {
    if (sizes[d] == 1) continue;
    if (nd > 0 && out_strides[nd - 1] == strides[d] * sizes[d]) {
      out_sizes[nd - 1] *= sizes[d];
      out_strides[nd - 1] = strides[d];
    } else {
      out_sizes[nd] = sizes[d];
      out_strides[nd] = strides[d];
      ++nd;
    }
  }
  return nd;
}

// Validates the layout and picks the path (a function of the layout and op only).
RedPlan plan_reduce(const char* where, ReduceOp op, const ReduceLayoutDev& L) {
  ARCLIGHT_CHECK(op == ReduceOp::kSum || op == ReduceOp::kMax || op == ReduceOp::kMin, where, "unknown ReduceOp code ",
                 int(op), "; expected kSum (0), kMax (1) or kMin (2)");
  ARCLIGHT_CHECK(L.n_keep >= 0 && L.n_keep <= kMaxEwDims, where, "n_keep is ", L.n_keep, "; expected 0..", kMaxEwDims);
  ARCLIGHT_CHECK(L.n_red >= 0 && L.n_red <= kMaxEwDims, where, "n_red is ", L.n_red, "; expected 0..", kMaxEwDims);
  const auto count = [&](int n, const std::int64_t* sizes, const std::int64_t* strides, const char* what) {
    std::int64_t total = 1;
    for (int d = 0; d < n; ++d) {
      ARCLIGHT_CHECK(sizes[d] >= 0, where, what, "_sizes[", d, "] is ", sizes[d], "; expected >= 0");
      ARCLIGHT_CHECK(strides[d] >= 0, where, what, "_strides[", d, "] is ", strides[d],
                     "; negative strides are not supported");
      if (total != 0 && sizes[d] != 0)
        ARCLIGHT_CHECK(total <= (std::int64_t(1) << 62) / sizes[d], where, "the ", what, " sizes overflow 2^62");
      total *= sizes[d];
    }
    return total;
  };
  RedPlan p;
  p.n_out = count(L.n_keep, L.keep_sizes, L.keep_strides, "keep");
  p.n_red_total = count(L.n_red, L.red_sizes, L.red_strides, "red");
  if (p.n_red_total == 0) {
    ARCLIGHT_CHECK(op == ReduceOp::kSum, where, op == ReduceOp::kMax ? "kMax" : "kMin",
                   " over an empty reduced set (a reduced size is 0) has no identity; expected a non-empty set");
  }
  if (p.n_out == 0) {
    p.path = Path::kNone;
    return p;
  }
  if (p.n_red_total == 0) {
    p.path = Path::kFillZero;
    return p;
  }
  p.n_keep = simplify_dims(L.n_keep, L.keep_sizes, L.keep_strides, p.keep_sizes, p.keep_strides);
  p.n_red = simplify_dims(L.n_red, L.red_sizes, L.red_strides, p.red_sizes, p.red_strides);
  if (p.n_out >= kManyOutputs || p.n_red_total <= kWarpReduceMax) {
    // Outputs closer in memory than reduced elements: neighbouring threads take neighbouring outputs.
    std::int64_t min_keep = INT64_MAX, min_red = INT64_MAX;
    for (int d = 0; d < p.n_keep; ++d) min_keep = p.keep_strides[d] < min_keep ? p.keep_strides[d] : min_keep;
    for (int d = 0; d < p.n_red; ++d) min_red = p.red_strides[d] < min_red ? p.red_strides[d] : min_red;
    p.path = p.n_out >= kThreadPerOutputMin && min_keep < min_red ? Path::kThread : Path::kWarp;
    return p;
  }
  p.path = Path::kChunks;
  p.chunks = detail::ceil_div(p.n_red_total, kReduceChunk);
  ARCLIGHT_CHECK(p.chunks <= std::int64_t(INT32_MAX), where, "reduced set of ", p.n_red_total,
                 " elements needs more than 2^31 - 1 blocks per output");
  return p;
}

// Partials of the two-level path: chunks per output, output-major.
std::int64_t workspace_floats(const RedPlan& p) {
  return p.path == Path::kChunks && p.chunks > 1 ? p.n_out * p.chunks : 0;
}

// ---- device side ----

template <ReduceOp Op>
__device__ __forceinline__ float r_init() {
  if constexpr (Op == ReduceOp::kSum) return 0.f;
  else if constexpr (Op == ReduceOp::kMax) return -INFINITY;
  else return INFINITY;
}

// Combines an accumulator with a value; kMax / kMin keep the first NaN they meet (NaN propagates).
template <ReduceOp Op>
__device__ __forceinline__ float r_combine(float acc, float v) {
  if constexpr (Op == ReduceOp::kSum) {
    return acc + v;
  } else {
    if (acc != acc) return acc;
    if (v != v) return v;
    if constexpr (Op == ReduceOp::kMax) return v > acc ? v : acc;
    else return v < acc ? v : acc;
  }
}

// Fixed xor-butterfly over the 32 lanes (all lanes active); every lane ends with a combination of all 32.
template <ReduceOp Op>
__device__ __forceinline__ float r_warp(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = r_combine<Op>(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block combine (blockDim.x == kReduceThreads): warp trees, then thread 0 combines the warp results in warp
// order. The result is valid in thread 0 only.
template <ReduceOp Op>
__device__ __forceinline__ float r_block(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = r_warp<Op>(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float acc = r_init<Op>();
  if (threadIdx.x == 0)
    for (int w = 0; w < kReduceThreads / 32; ++w) acc = r_combine<Op>(acc, scratch[w]);
  return acc;
}

// Element offset of row-major index `idx` over n dims (the outermost dim takes what remains: no division).
__device__ __forceinline__ std::int64_t dims_offset(std::int64_t idx, int n, const std::int64_t* sizes,
                                                    const std::int64_t* strides) {
  std::int64_t off = 0;
  for (int d = n - 1; d > 0; --d) {
    const std::int64_t q = idx / sizes[d];
    off += (idx - q * sizes[d]) * strides[d];
    idx = q;
  }
  if (n > 0) off += idx * strides[0];
  return off;
}

// One thread per output, sequential over the reduced set (innermost reduced dim walked directly).
template <ReduceOp Op>
__global__ void __launch_bounds__(kReduceThreads)
    reduce_thread_kernel(RedPlan p, const float* __restrict__ in, float scale, float* __restrict__ out) {
  const std::int64_t inner = p.n_red > 0 ? p.red_sizes[p.n_red - 1] : 1;
  const std::int64_t inner_stride = p.n_red > 0 ? p.red_strides[p.n_red - 1] : 0;
  const std::int64_t outer = p.n_red_total / inner;
  const int n_outer_dims = p.n_red > 0 ? p.n_red - 1 : 0;
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t k = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < p.n_out; k += stride) {
    const std::int64_t base = dims_offset(k, p.n_keep, p.keep_sizes, p.keep_strides);
    float acc = r_init<Op>();
    for (std::int64_t jo = 0; jo < outer; ++jo) {
      const float* row = in + base + dims_offset(jo, n_outer_dims, p.red_sizes, p.red_strides);
      for (std::int64_t r = 0; r < inner; ++r) acc = r_combine<Op>(acc, row[r * inner_stride]);
    }
    out[k] = acc * scale;
  }
}

// One warp per output: lane l takes reduced elements l, l + 32, ... in order, then the fixed warp tree.
template <ReduceOp Op>
__global__ void __launch_bounds__(kReduceThreads)
    reduce_warp_kernel(RedPlan p, const float* __restrict__ in, float scale, float* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const std::int64_t warp = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const std::int64_t warps = (std::int64_t(gridDim.x) * blockDim.x) >> 5;
  for (std::int64_t k = warp; k < p.n_out; k += warps) {  // k is warp-uniform: all lanes reach the shuffles
    const float* src = in + dims_offset(k, p.n_keep, p.keep_sizes, p.keep_strides);
    float acc = r_init<Op>();
    for (std::int64_t j = lane; j < p.n_red_total; j += 32)
      acc = r_combine<Op>(acc, src[dims_offset(j, p.n_red, p.red_sizes, p.red_strides)]);
    acc = r_warp<Op>(acc);
    if (lane == 0) out[k] = acc * scale;
  }
}

// Block (chunk c = blockIdx.x, output k = blockIdx.y): reduced elements [c·kReduceChunk, (c+1)·kReduceChunk).
// One chunk: writes out[k] = scale·result; several: partials[k·chunks + c] = result (unscaled).
template <ReduceOp Op>
__global__ void __launch_bounds__(kReduceThreads)
    reduce_chunk_kernel(RedPlan p, const float* __restrict__ in, float scale, float* __restrict__ out,
                        float* __restrict__ partials) {
  __shared__ float scratch[kReduceThreads / 32];
  const std::int64_t k = blockIdx.y, c = blockIdx.x;
  const std::int64_t begin = c * kReduceChunk;
  const std::int64_t end = begin + kReduceChunk < p.n_red_total ? begin + kReduceChunk : p.n_red_total;
  const float* src = in + dims_offset(k, p.n_keep, p.keep_sizes, p.keep_strides);
  float acc = r_init<Op>();
  for (std::int64_t j = begin + threadIdx.x; j < end; j += kReduceThreads)
    acc = r_combine<Op>(acc, src[dims_offset(j, p.n_red, p.red_sizes, p.red_strides)]);
  acc = r_block<Op>(acc, scratch);
  if (threadIdx.x == 0) {
    if (p.chunks == 1) out[k] = acc * scale;
    else partials[k * p.chunks + c] = acc;
  }
}

// One warp per output combining its `chunks` partials: lane l takes chunks l, l + 32, ..., then the warp tree.
template <ReduceOp Op>
__global__ void __launch_bounds__(kReduceThreads)
    reduce_finish_kernel(std::int64_t n_out, std::int64_t chunks, const float* __restrict__ partials, float scale,
                         float* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const std::int64_t warp = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const std::int64_t warps = (std::int64_t(gridDim.x) * blockDim.x) >> 5;
  for (std::int64_t k = warp; k < n_out; k += warps) {
    float acc = r_init<Op>();
    for (std::int64_t c = lane; c < chunks; c += 32) acc = r_combine<Op>(acc, partials[k * chunks + c]);
    acc = r_warp<Op>(acc);
    if (lane == 0) out[k] = acc * scale;
  }
}

template <ReduceOp Op>
void launch_reduce(const char* where, const RedPlan& p, const float* in, float scale, float* out, float* workspace,
                   Stream stream) {
  switch (p.path) {
    case Path::kThread:
      reduce_thread_kernel<Op><<<detail::elementwise_grid(p.n_out, kReduceThreads), kReduceThreads, 0, stream>>>(
          p, in, scale, out);
      detail::check_launch(where);
      return;
    case Path::kWarp:
      reduce_warp_kernel<Op><<<detail::elementwise_grid(p.n_out * 32, kReduceThreads), kReduceThreads, 0, stream>>>(
          p, in, scale, out);
      detail::check_launch(where);
      return;
    case Path::kChunks: {
      const dim3 grid(unsigned(p.chunks), unsigned(p.n_out));
      reduce_chunk_kernel<Op><<<grid, kReduceThreads, 0, stream>>>(p, in, scale, out, workspace);
      detail::check_launch(where);
      if (p.chunks > 1) {
        reduce_finish_kernel<Op><<<detail::elementwise_grid(p.n_out * 32, kReduceThreads), kReduceThreads, 0,
                                   stream>>>(p.n_out, p.chunks, workspace, scale, out);
        detail::check_launch(where);
      }
      return;
    }
    default: ::arclight::fail(where, "internal: no kernel for reduction path ", int(p.path));
  }
}

}  // namespace reduce_detail

std::int64_t reduce_workspace_floats(const ReduceLayoutDev& layout) {
  using namespace reduce_detail;
  return workspace_floats(plan_reduce("cuda::reduce_workspace_floats", ReduceOp::kSum, layout));
}

void reduce(ReduceOp op, const ReduceLayoutDev& layout, const float* in, float scale, float* out, float* workspace,
            Stream stream) {
  using namespace reduce_detail;
  const char* where = "cuda::reduce";
  const RedPlan p = plan_reduce(where, op, layout);
  if (p.path == Path::kNone) return;
  ARCLIGHT_CHECK(out != nullptr, where, "out is null; expected a device pointer to ", p.n_out, " floats");
  ARCLIGHT_CHECK(ew_detail::aligned(out, 4), where, "out is not 4-byte aligned");
  if (p.path == Path::kFillZero) {  // kSum over an empty set
    ew_detail::launch_fill<std::uint32_t>(where, out, p.n_out, 0u, stream);
    return;
  }
  ARCLIGHT_CHECK(in != nullptr, where, "in is null; expected a device pointer to the ", p.n_out * p.n_red_total,
                 " addressed floats");
  ARCLIGHT_CHECK(ew_detail::aligned(in, 4), where, "in is not 4-byte aligned");
  const std::int64_t ws = workspace_floats(p);
  ARCLIGHT_CHECK(ws == 0 || workspace != nullptr, where, "workspace is null; expected ", ws,
                 " floats (reduce_workspace_floats)");
  ARCLIGHT_CHECK(ws == 0 || ew_detail::aligned(workspace, 4), where, "workspace is not 4-byte aligned");
  switch (op) {
    case ReduceOp::kSum: return launch_reduce<ReduceOp::kSum>(where, p, in, scale, out, workspace, stream);
    case ReduceOp::kMax: return launch_reduce<ReduceOp::kMax>(where, p, in, scale, out, workspace, stream);
    case ReduceOp::kMin: return launch_reduce<ReduceOp::kMin>(where, p, in, scale, out, workspace, stream);
  }
}

}  // namespace arclight::kernels::cuda
