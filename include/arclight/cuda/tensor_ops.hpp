// The device side of the op layer: Tensor-level calls of the CUDA launchers (kernels/cuda/launchers*.hpp) that
// the ops in include/arclight/ops/ make when their tensors live on a GPU. Each function checks what the CUDA
// kernels support (float32 math; bf16 / f16 storage for mixed-precision convolutions and GEMMs; contiguity where a
// launcher needs it), builds the launcher's plain layout struct from the tensors' shapes and strides, takes its
// workspace from the caching device allocator (a temporary Tensor: no cudaMalloc in the steady state) and
// launches on the legacy default stream, so consecutive ops are ordered without synchronisation and a
// host read (Tensor::to(cpu), item()) waits for them.
//
// Included by core/tensor.hpp right after class Tensor (the factories and the autograd engine use fill, copy and
// add). In a build without ARCLIGHT_WITH_CUDA every function still exists and throws "<op>: this build has no
// CUDA backend" — unreachable in practice, since no device tensor can be created there — so the ops call them
// without #ifdefs.
#pragma once

#include <array>
#include <atomic>
#include <cstdlib>
#include <string>
#include <cstdint>
#include <cstring>
#include <vector>

#include "arclight/core/error.hpp"
#include "kernels/common/activation_math.hpp"
#include "kernels/common/elementwise_math.hpp"

#ifdef ARCLIGHT_WITH_CUDA
#include "kernels/cuda/launchers.hpp"
#include "kernels/cuda/launchers_dnn.hpp"
#include "kernels/cuda/launchers_ops.hpp"
#endif

namespace arclight {

Tensor empty(const Shape& shape, DType dtype, Device device);

namespace cuda {

// Mixed precision on the device (autocast): while a scope holds DType::bf16 or DType::f16 (the "autocast dtype"),
// convolutions (cuDNN; not our depthwise kernels) and matrix products of float32 device tensors run on copies of
// their operands in that 16-bit type with float32 accumulation (outputs and gradients converted back to float32);
// every other op — batch norm, activations, GeM, the loss — stays float32, and parameters stay float32 master
// weights. f16 has 5 exponent bits: small gradients underflow and large activations overflow to inf, so train with
// cuda::GradScaler (arclight/cuda/grad_scaler.hpp: loss scaling, steps with inf/NaN gradients skipped); bf16 has
// float32's range and needs no scaler. Per thread, nestable (the destructor restores the previous dtype).
// DType::f32 (the default) switches it off.
namespace detail {
inline DType& autocast_slot() {
  thread_local DType d = DType::f32;
  return d;
}
}  // namespace detail
inline DType autocast_dtype() { return detail::autocast_slot(); }
class AutocastScope {
 public:
  explicit AutocastScope(DType dtype) : previous_(detail::autocast_slot()) {
    ARCLIGHT_CHECK(dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16, "cuda::AutocastScope",
                   "expected f32 (off), bf16 or f16, got ", dtype_name(dtype));
    detail::autocast_slot() = dtype;
  }
  ~AutocastScope() { detail::autocast_slot() = previous_; }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  DType previous_;
};

// Which kernels run depthwise convolutions (channel multiplier 1) on the device: our own (kernels/cuda/depthwise.cuh,
// the default) or cuDNN's. Process-wide; the environment variable ARCLIGHT_CUDA_DEPTHWISE=own|cudnn sets the initial
// choice (another value is an error at the first use) — bench/device compares both.
enum class DepthwiseKernels { own, cudnn };
namespace detail {
inline DepthwiseKernels depthwise_from_env() {
  const char* e = std::getenv("ARCLIGHT_CUDA_DEPTHWISE");
  if (e == nullptr || std::string(e) == "own") return DepthwiseKernels::own;
  ARCLIGHT_CHECK(std::string(e) == "cudnn", "ARCLIGHT_CUDA_DEPTHWISE", "expected 'own' or 'cudnn', got '", e, "'");
  return DepthwiseKernels::cudnn;
}
inline std::atomic<DepthwiseKernels>& depthwise_slot() {
  static std::atomic<DepthwiseKernels> k{depthwise_from_env()};
  return k;
}
}  // namespace detail
inline DepthwiseKernels depthwise_kernels() { return detail::depthwise_slot().load(std::memory_order_relaxed); }
inline void set_depthwise_kernels(DepthwiseKernels k) { detail::depthwise_slot().store(k, std::memory_order_relaxed); }

namespace detail {

inline bool on_cuda(const Tensor& t) { return t.defined() && t.device().is_cuda(); }

// Throws "<op>: <what> <t> is on <device>, expected <dev> (as the other operands)" for a defined tensor elsewhere.
inline void check_device(const Tensor& t, Device dev, const char* op, const char* what) {
  if (!t.defined()) return;
  ARCLIGHT_CHECK(t.device() == dev, op, what, " ", t.str(), " is on ", t.device().str(), ", expected ", dev.str(),
                 " (all operands of an op must be on one device; move them with to())");
}

// requires: t a float32 device tensor (what every CUDA math kernel computes on).
inline void check_f32(const Tensor& t, const char* op, const char* what) {
  if (!t.defined()) return;
  ARCLIGHT_CHECK(t.dtype() == DType::f32, op, "on CUDA, expected ", what, " of dtype f32, got ", t.str(),
                 " (the device kernels compute in float32; bf16 / f16 are used inside convolutions and GEMMs "
                 "under cuda::AutocastScope)");
}

[[noreturn]] inline void no_backend(const char* op) { fail(op, "this build has no CUDA backend"); }

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.raw_data()) : nullptr;
}

// A device scratch buffer of `floats` floats (at least one) from the caching allocator.
inline Tensor scratch(std::int64_t floats, Device dev) { return empty({floats > 0 ? floats : 1}, DType::f32, dev); }

#ifdef ARCLIGHT_WITH_CUDA
namespace kc = kernels::cuda;

// The layout of an elementwise launch over `shape` (row-major): operand k's element strides, 0 on dims it is
// broadcast along (a lower-rank operand is aligned to the right, NumPy style). Size-1 dims are dropped and
// neighbouring dims that are contiguous in EVERY operand are merged, so most launches are 1-D.
template <std::size_t N>
kc::EwLayout ew_layout(const Shape& shape, const std::array<const Tensor*, N>& ts, const char* op) {
  static_assert(N >= 1 && N <= 4, "ew_layout: 1 to 4 operands");
  const int nd = static_cast<int>(shape.size());
  kc::EwLayout L;
  int n = 0;  // merged dims so far (only the first kMaxEwDims are stored; more is an error below)
  std::array<std::int64_t, N> prev{};
  for (int d = 0; d < nd; ++d) {
    if (shape[d] == 1) continue;
    std::array<std::int64_t, N> st{};
    for (std::size_t k = 0; k < N; ++k) {
      const Tensor& t = *ts[k];
      const int lead = nd - static_cast<int>(t.dim());
      st[k] = (d < lead || t.shape()[d - lead] == 1) ? 0 : t.strides()[d - lead];
    }
    // Merge into the previous kept dim when every operand walks both as one.
    bool merge = n > 0;
    for (std::size_t k = 0; k < N && merge; ++k) merge = prev[k] == st[k] * shape[d];
    if (!merge) ++n;
    if (n <= kc::kMaxEwDims) {
      L.sizes[n - 1] = merge ? L.sizes[n - 1] * shape[d] : shape[d];
      for (std::size_t k = 0; k < N; ++k) L.strides[k][n - 1] = st[k];
    }
    prev = st;
  }
  ARCLIGHT_CHECK(n <= kc::kMaxEwDims, op, "on CUDA, the operands' layout needs ", n,
                 " dims after merging, more than the ", kc::kMaxEwDims,
                 " the elementwise kernels take (make an operand contiguous first)");
  L.ndim = n;
  return L;
}
#endif

// ---- elementwise ----------------------------------------------------------------------------------------

// out = op(a) (float32, a broadcast to out's shape).
inline void unary(kernels::EwOp op, kernels::EwParams params, const Tensor& out, const Tensor& a, const char* name) {
  check_f32(out, name, "output");
  check_f32(a, name, "input");
#ifdef ARCLIGHT_WITH_CUDA
  kc::ew_unary(op, params, ew_layout<2>(out.shape(), {&out, &a}, name), ptr<float>(out), ptr<float>(a), nullptr);
#else
  (void)op, (void)params, (void)out, (void)a;
  no_backend(name);
#endif
}

// out = op(a, b) with broadcasting; out is u8 for the mask ops, else float32.
inline void binary(kernels::EwOp op, const Tensor& out, const Tensor& a, const Tensor& b, const char* name) {
  check_f32(a, name, "input");
  check_f32(b, name, "input");
  ARCLIGHT_CHECK(out.dtype() == (kernels::ew_writes_mask(op) ? DType::u8 : DType::f32), name,
                 "on CUDA, unexpected output dtype ", out.str());
#ifdef ARCLIGHT_WITH_CUDA
  kc::ew_binary(op, ew_layout<3>(out.shape(), {&out, &a, &b}, name), out.raw_data(), ptr<float>(a), ptr<float>(b),
                nullptr);
#else
  (void)op, (void)out, (void)a, (void)b;
  no_backend(name);
#endif
}

// out = cond ? a : b (cond u8), all broadcast to out's shape.
inline void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_f32(a, "where", "input");
  check_f32(b, "where", "input");
#ifdef ARCLIGHT_WITH_CUDA
  kc::ew_where(ew_layout<4>(out.shape(), {&out, &cond, &a, &b}, "where"), ptr<float>(out),
               ptr<std::uint8_t>(cond), ptr<float>(a), ptr<float>(b), nullptr);
#else
  (void)out, (void)cond, (void)a, (void)b;
  no_backend("where");
#endif
}

// dst = src elementwise (same dtype, src broadcast to dst's shape; any strides on both sides).
inline void copy_into(const Tensor& dst, const Tensor& src, const char* name) {
  ARCLIGHT_CHECK(dst.dtype() == src.dtype(), name, "dtype mismatch: ", dst.str(), " vs ", src.str());
#ifdef ARCLIGHT_WITH_CUDA
  if (dst.numel() == 0) return;
  kc::ew_copy(ew_layout<2>(dst.shape(), {&dst, &src}, name), dst.raw_data(), src.raw_data(),
              static_cast<int>(dst.element_size()), nullptr);
#else
  (void)dst, (void)src;
  no_backend(name);
#endif
}

// A contiguous device copy of t (same dtype).
inline Tensor copy_contiguous(const Tensor& t) {
  Tensor out = empty(t.shape(), t.dtype(), t.device());
  copy_into(out, t, "copy");
  return out;
}

// A contiguous copy of t converted to `dtype` (f32 <-> bf16, f32 <-> f16, f32 <-> f64, i64 -> f32, u8 -> f32; the
// 16-bit conversions round to nearest even, f16 overflows to ±inf: kernels/common/{bf16,f16}_math.hpp).
inline Tensor convert(const Tensor& t, DType dtype, const char* name) {
  const Tensor src = t.is_contiguous() ? t : copy_contiguous(t);
  Tensor out = empty(t.shape(), dtype, t.device());
#ifdef ARCLIGHT_WITH_CUDA
  if (out.numel() > 0)
    kc::ew_convert(static_cast<int>(dtype), static_cast<int>(t.dtype()), out.numel(), out.raw_data(), src.raw_data(),
                   nullptr);
#else
  (void)src, (void)name;
  no_backend(name);
#endif
  return out;
}

// Every element of the contiguous device tensor t set to v (converted to t's dtype).
inline void fill(const Tensor& t, double v) {
  std::uint64_t bits = 0;
  switch (t.dtype()) {
    case DType::f32: {
      const float f = static_cast<float>(v);
      std::uint32_t u;
      std::memcpy(&u, &f, 4);
      bits = u;
      break;
    }
    case DType::f64: std::memcpy(&bits, &v, 8); break;
    case DType::i32: bits = static_cast<std::uint32_t>(static_cast<std::int32_t>(v)); break;
    case DType::i64: bits = static_cast<std::uint64_t>(static_cast<std::int64_t>(v)); break;
    case DType::u8: bits = static_cast<std::uint8_t>(v); break;
    default: fail("fill_", "on CUDA, filling ", t.str(), " is not supported (f32, f64, i32, i64, u8)");
  }
#ifdef ARCLIGHT_WITH_CUDA
  if (t.numel() > 0) kc::ew_fill(t.raw_data(), t.numel(), static_cast<int>(t.element_size()), bits, nullptr);
#else
  no_backend("fill_");
#endif
}

// ---- reductions -----------------------------------------------------------------------------------------

// out (contiguous, the kept dims of `in` in order) = scale · op over the dims flagged in `reduced`.
enum class Reduce { sum, max, min };
inline void reduce(Reduce op, const Tensor& in, const std::vector<bool>& reduced, double scale, const Tensor& out,
                   const char* name) {
  check_f32(in, name, "input");
#ifdef ARCLIGHT_WITH_CUDA
  kc::ReduceLayoutDev L;
  for (std::size_t d = 0; d < reduced.size(); ++d) {
    const std::int64_t size = in.shape()[d], stride = in.strides()[d];
    if (size == 1) continue;
    const bool red = reduced[d];
    ARCLIGHT_CHECK((red ? L.n_red : L.n_keep) < kc::kMaxEwDims, name, "on CUDA, too many ", red ? "reduced" : "kept",
                   " dims in ", in.str());
    if (red) {
      L.red_sizes[L.n_red] = size;
      L.red_strides[L.n_red++] = stride;
    } else {
      L.keep_sizes[L.n_keep] = size;
      L.keep_strides[L.n_keep++] = stride;
    }
  }
  const kc::ReduceOp rop = op == Reduce::sum   ? kc::ReduceOp::kSum
                           : op == Reduce::max ? kc::ReduceOp::kMax
                                               : kc::ReduceOp::kMin;
  const std::int64_t ws_floats = kc::reduce_workspace_floats(L);
  Tensor ws = ws_floats > 0 ? scratch(ws_floats, in.device()) : Tensor();
  kc::reduce(rop, L, ptr<float>(in), static_cast<float>(scale), ptr<float>(out), ptr<float>(ws), nullptr);
#else
  (void)op, (void)in, (void)reduced, (void)scale, (void)out;
  no_backend(name);
#endif
}

}  // namespace detail
}  // namespace cuda
}  // namespace arclight
