// Host-side helpers over the cuBLAS / cuDNN launchers of kernels/cuda/launchers_dnn.hpp: bfloat16 and IEEE half
// (f16) conversions on the host (round-to-nearest-even, the bits the device conversion kernel produces), a scope
// guard that sets the deterministic / TF32 / workspace-cap / search settings and restores them, a growable
// device workspace, and convolution calls that size that workspace themselves. The conversions are plain C++
// and always available; the rest exists only in builds with ARCLIGHT_WITH_CUDA. No CUDA header is included.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "arclight/core/dtype.hpp"
#include "arclight/core/error.hpp"
#include "kernels/common/bf16_math.hpp"
#include "kernels/common/f16_math.hpp"

#ifdef ARCLIGHT_WITH_CUDA
#include "arclight/cuda/runtime.hpp"
#include "kernels/cuda/launchers_dnn.hpp"
#endif

namespace arclight::cuda {

// The bfloat16 bit pattern nearest to v (ties to even); NaN stays a (quiet) NaN, infinities stay infinite. The
// same function the device conversion kernel uses (kernels/common/bf16_math.hpp).
inline std::uint16_t float_to_bf16_bits(float v) { return kernels::float_to_bf16_bits(v); }

// The float a bfloat16 bit pattern stands for (exact).
inline float bf16_bits_to_float(std::uint16_t b) { return kernels::bf16_bits_to_float(b); }

inline std::vector<std::uint16_t> to_bf16_bits(const std::vector<float>& v) {
  std::vector<std::uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16_bits(v[i]);
  return out;
}

inline std::vector<float> bf16_bits_to_floats(const std::vector<std::uint16_t>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = bf16_bits_to_float(v[i]);
  return out;
}

// Each value rounded to the nearest bfloat16 (what a bf16 tensor of these values holds).
inline std::vector<float> round_to_bf16(const std::vector<float>& v) { return bf16_bits_to_floats(to_bf16_bits(v)); }

// The IEEE half (f16) bit pattern nearest to v (ties to even; subnormals kept; |v| >= 65520 -> ±inf; NaN stays NaN):
// kernels/common/f16_math.hpp, the function the device conversion kernel uses.
inline std::uint16_t float_to_f16_bits(float v) { return kernels::float_to_f16_bits(v); }

// The float an f16 bit pattern stands for (exact).
inline float f16_bits_to_float(std::uint16_t b) { return kernels::f16_bits_to_float(b); }

// The 16-bit patterns of v in `dtype` (bf16 or f16; else arclight::Error naming the dtype).
inline std::vector<std::uint16_t> to_half_bits(const std::vector<float>& v, DType dtype) {
  ARCLIGHT_CHECK(dtype == DType::bf16 || dtype == DType::f16, "cuda::to_half_bits", "expected bf16 or f16, got ",
                 dtype_name(dtype));
  std::vector<std::uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    out[i] = dtype == DType::f16 ? float_to_f16_bits(v[i]) : float_to_bf16_bits(v[i]);
  return out;
}

// The floats 16-bit patterns of `dtype` (bf16 or f16) stand for (exact).
inline std::vector<float> half_bits_to_floats(const std::vector<std::uint16_t>& v, DType dtype) {
  ARCLIGHT_CHECK(dtype == DType::bf16 || dtype == DType::f16, "cuda::half_bits_to_floats",
                 "expected bf16 or f16, got ", dtype_name(dtype));
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    out[i] = dtype == DType::f16 ? f16_bits_to_float(v[i]) : bf16_bits_to_float(v[i]);
  return out;
}

inline std::vector<std::uint16_t> to_f16_bits(const std::vector<float>& v) { return to_half_bits(v, DType::f16); }
inline std::vector<float> f16_bits_to_floats(const std::vector<std::uint16_t>& v) {
  return half_bits_to_floats(v, DType::f16);
}
inline std::vector<float> round_to_f16(const std::vector<float>& v) { return f16_bits_to_floats(to_f16_bits(v)); }

// Each value as a tensor of `dtype` holds it: f32 unchanged, bf16 / f16 rounded to nearest even.
inline std::vector<float> round_to(const std::vector<float>& v, DType dtype) {
  return dtype == DType::f32 ? v : half_bits_to_floats(to_half_bits(v, dtype), dtype);
}

#ifdef ARCLIGHT_WITH_CUDA

using kernels::cuda::ConvAlgoSearch;
using kernels::cuda::ConvPass;

// The process-wide DNN settings (see launchers_dnn.hpp).
struct DnnSettings {
  bool deterministic = false;
  bool allow_tf32 = false;
  std::size_t conv_workspace_limit = kernels::cuda::kDefaultConvWorkspaceLimit;
  ConvAlgoSearch search = ConvAlgoSearch::kHeuristic;

  static DnnSettings current() {
    return DnnSettings{kernels::cuda::dnn_deterministic(), kernels::cuda::allow_tf32(),
                       kernels::cuda::conv_workspace_limit(), kernels::cuda::conv_algo_search()};
  }
  void apply() const {
    kernels::cuda::set_dnn_deterministic(deterministic);
    kernels::cuda::set_allow_tf32(allow_tf32);
    kernels::cuda::set_conv_workspace_limit(conv_workspace_limit);
    kernels::cuda::set_conv_algo_search(search);
  }
};

// Applies `s` for the lifetime of the scope, then restores what was set before. Not thread-safe with respect
// to other threads changing the settings at the same time (they are process-wide).
class DnnSettingsScope {
 public:
  explicit DnnSettingsScope(const DnnSettings& s) : saved_(DnnSettings::current()) { s.apply(); }
  DnnSettingsScope(const DnnSettingsScope&) = delete;
  DnnSettingsScope& operator=(const DnnSettingsScope&) = delete;
  ~DnnSettingsScope() {
    try {
      saved_.apply();
    } catch (...) {  // apply() only throws on an invalid search mode, which `saved_` cannot hold
    }
  }

 private:
  DnnSettings saved_;
};

// A device workspace that only grows: ensure(bytes) returns a 256-byte-aligned buffer of at least `bytes`,
// reallocating (after waiting for `stream`, whose queued work may still read the old buffer) only when it must.
// Use one per stream; steady state performs no allocation.
class Workspace {
 public:
  void* ensure(std::size_t bytes, Stream stream = nullptr) {
    if (bytes > buffer_.size()) {
      if (buffer_.size() > 0) kernels::cuda::synchronize(stream, "cuda::Workspace::ensure");
      buffer_ = DeviceBuffer<std::byte>();  // free first: the old and new buffers need not coexist
      buffer_ = DeviceBuffer<std::byte>(bytes, "cuda::Workspace::ensure");
    }
    return buffer_.data();
  }
  std::size_t bytes() const { return buffer_.size(); }

 private:
  DeviceBuffer<std::byte> buffer_;
};

// The launchers of launchers_dnn.hpp with the workspace sized and provided by `ws` (same contracts otherwise).
inline void conv2d_forward(Workspace& ws, const kernels::Conv2dShape& s, DType dtype, const void* x, const void* w,
                           const float* bias, void* y, Stream stream = nullptr) {
  const std::size_t bytes = kernels::cuda::conv2d_workspace_bytes(s, dtype, ConvPass::kForward);
  kernels::cuda::conv2d_forward(s, dtype, x, w, bias, y, ws.ensure(bytes, stream), bytes, stream);
}

inline void conv2d_backward_data(Workspace& ws, const kernels::Conv2dShape& s, DType dtype, const void* dy,
                                 const void* w, void* dx, Stream stream = nullptr) {
  const std::size_t bytes = kernels::cuda::conv2d_workspace_bytes(s, dtype, ConvPass::kBackwardData);
  kernels::cuda::conv2d_backward_data(s, dtype, dy, w, dx, ws.ensure(bytes, stream), bytes, stream);
}

inline void conv2d_backward_filter(Workspace& ws, const kernels::Conv2dShape& s, DType dtype, const void* x,
                                   const void* dy, void* dw, float* dbias, Stream stream = nullptr) {
  const std::size_t bytes = kernels::cuda::conv2d_workspace_bytes(s, dtype, ConvPass::kBackwardFilter);
  kernels::cuda::conv2d_backward_filter(s, dtype, x, dy, dw, dbias, ws.ensure(bytes, stream), bytes, stream);
}

#endif  // ARCLIGHT_WITH_CUDA

}  // namespace arclight::cuda
