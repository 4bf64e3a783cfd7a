// Fused multi-tensor optimizer steps on the device: one launch updates up to kMaxOptimTensors parameter
// tensors (their pointers and sizes travel in the kernel's parameter block, so the launch needs no device-side
// metadata and can be captured in a CUDA graph). The per-element updates are kernels/common/optim_math.hpp's
// sgd_update / adamw_update (PyTorch semantics, shared with the CPU kernels in kernels/cpu/optim.hpp), and
// the validation is the CPU's (validate_sgd / validate_adamw). The lr can come from device memory (the
// schedule's output, kernels/cuda/schedule.cuh). Each element is read and written once: SGD with momentum
// moves 4 (p) + 4 (g) + 4 (buf) read and 8 written bytes per element, AdamW 16 read + 12 written. agc_clip is the
// multi-tensor Adaptive Gradient Clipping that runs before the update (one warp per output unit).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/common/optim_math.hpp"
#include "kernels/cpu/optim.hpp"
#include "kernels/cuda/common.cuh"

namespace arclight::kernels::cuda {

namespace detail {

constexpr int kMaxOptimTensors = 48;
constexpr int kOptimThreads = 256;

struct OptimBatch {
  float* param[kMaxOptimTensors];
  const float* grad[kMaxOptimTensors];
  float* buf0[kMaxOptimTensors];
  float* buf1[kMaxOptimTensors];
  float* buf2[kMaxOptimTensors];
  std::int64_t count[kMaxOptimTensors];
  int tensors;
};

// Every tensor of the batch is swept by the whole grid (grid-stride), so tiny tensors cost one loop test.
__global__ void __launch_bounds__(kOptimThreads)
    sgd_multi_kernel(OptimBatch b, SgdConfig cfg, bool first_step, const float* __restrict__ lr_device) {
  const float lr = lr_device != nullptr ? *lr_device : float(cfg.lr);
  const float mom = float(cfg.momentum), damp = float(cfg.dampening), wd = float(cfg.weight_decay);
  const std::int64_t start = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (int t = 0; t < b.tensors; ++t) {
    float* __restrict__ p = b.param[t];
    const float* __restrict__ g = b.grad[t];
    float* __restrict__ buf = b.buf0[t];
    const std::int64_t n = b.count[t];
    for (std::int64_t i = start; i < n; i += stride) {
      float pv = p[i];
      float bv = buf != nullptr ? buf[i] : 0.f;
      sgd_update(pv, __ldg(g + i), bv, first_step, lr, mom, damp, wd, cfg.nesterov);
      p[i] = pv;
      if (buf != nullptr) buf[i] = bv;
    }
  }
}

__global__ void __launch_bounds__(kOptimThreads)
    adamw_multi_kernel(OptimBatch b, AdamWConfig cfg, std::int64_t step, const float* __restrict__ lr_device) {
  AdamWConfig c = cfg;
  if (lr_device != nullptr) c.lr = double(*lr_device);
  const AdamWScalars s = adamw_scalars(c, step);
  const float b1 = float(c.beta1), b2 = float(c.beta2), eps = float(c.eps);
  const std::int64_t start = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (int t = 0; t < b.tensors; ++t) {
    float* __restrict__ p = b.param[t];
    const float* __restrict__ g = b.grad[t];
    float* __restrict__ m = b.buf0[t];
    float* __restrict__ v = b.buf1[t];
    float* __restrict__ vmax = c.amsgrad ? b.buf2[t] : nullptr;
    const std::int64_t n = b.count[t];
    for (std::int64_t i = start; i < n; i += stride) {
      float pv = p[i], mv = m[i], vv = v[i];
      float vm = vmax != nullptr ? vmax[i] : 0.f;
      adamw_update(pv, __ldg(g + i), mv, vv, vmax != nullptr ? &vm : nullptr, b1, b2, eps, s);
      p[i] = pv;
      m[i] = mv;
      v[i] = vv;
      if (vmax != nullptr) vmax[i] = vm;
    }
  }
}

// Adaptive Gradient Clipping of up to kMaxOptimTensors tensors in one launch. Tensor t is viewed as units[t] rows of
// unit_size[t] floats (unit_end[t] = units of tensors 0..t, a running sum). One warp clips one unit: lanes stride
// the row summing w² and g² in float, a shuffle tree combines them (fixed order: deterministic), and the row's
// gradient is scaled in place by agc_scale. Units are dealt to warps grid-stride in increasing order, so each
// warp's tensor index only moves forward. Bytes: w and g read once, g written once where clipped.
struct AgcBatch {
  const float* param[kMaxOptimTensors];
  float* grad[kMaxOptimTensors];
  std::int64_t unit_size[kMaxOptimTensors];
  std::int64_t unit_end[kMaxOptimTensors];
  int tensors;
};

constexpr int kAgcThreads = 256;

__global__ void __launch_bounds__(kAgcThreads) agc_multi_kernel(AgcBatch b, float clip_factor, float eps) {
  const int lane = threadIdx.x & 31;
  const std::int64_t first_warp = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const std::int64_t warps = (std::int64_t(gridDim.x) * blockDim.x) >> 5;
  const std::int64_t total = b.unit_end[b.tensors - 1];
  int t = 0;
  for (std::int64_t u = first_warp; u < total; u += warps) {
    while (u >= b.unit_end[t]) ++t;
    const std::int64_t len = b.unit_size[t];
    const std::int64_t row = u - (t == 0 ? 0 : b.unit_end[t - 1]);
    const float* __restrict__ w = b.param[t] + row * len;
    float* __restrict__ g = b.grad[t] + row * len;
    float ww = 0.f, gg = 0.f;
    for (std::int64_t i = lane; i < len; i += 32) {
      const float wv = __ldg(w + i), gv = g[i];
      ww = fmaf(wv, wv, ww);
      gg = fmaf(gv, gv, gg);
    }
    ww = warp_sum(ww);
    gg = warp_sum(gg);
    const float f = agc_scale(sqrtf(ww), sqrtf(gg), clip_factor, eps);
    if (f != 1.f)
      for (std::int64_t i = lane; i < len; i += 32) g[i] *= f;
  }
}

inline unsigned optim_grid(const OptimBatch& b) {
  std::int64_t largest = 1;
  for (int t = 0; t < b.tensors; ++t) largest = b.count[t] > largest ? b.count[t] : largest;
  // Enough blocks for the largest tensor, capped (each thread then loops): 132 SMs x 8 blocks x a few waves.
  const std::int64_t blocks = ceil_div(largest, kOptimThreads);
  return unsigned(blocks < 4096 ? (blocks < 1 ? 1 : blocks) : 4096);
}

// Splits the host list into batches of kMaxOptimTensors and launches `launch(batch)` for each.
template <typename Launch>
void for_each_batch(const char* op, const OptimTensor* tensors, std::int64_t tensor_count, bool needs_buf0,
                    bool needs_buf1, bool needs_buf2, Launch&& launch) {
  ARCLIGHT_CHECK(tensor_count >= 0, op, "expected tensor_count >= 0, got ", tensor_count);
  if (tensor_count == 0) return;
  ARCLIGHT_CHECK(tensors != nullptr, op, "expected a host array of ", tensor_count, " tensors, got null");
  OptimBatch b{};
  b.tensors = 0;
  for (std::int64_t t = 0; t < tensor_count; ++t) {
    const OptimTensor& x = tensors[t];
    ARCLIGHT_CHECK(x.count >= 0, op, "tensor ", t, ": expected count >= 0, got ", x.count);
    if (x.count == 0) continue;
    ARCLIGHT_CHECK(x.param != nullptr && x.grad != nullptr, op, "tensor ", t, ": expected non-null param and grad");
    ARCLIGHT_CHECK(!needs_buf0 || x.buf0 != nullptr, op, "tensor ", t, ": expected its first state buffer (",
                   x.count, " floats), got null");
    ARCLIGHT_CHECK(!needs_buf1 || x.buf1 != nullptr, op, "tensor ", t, ": expected its second state buffer (",
                   x.count, " floats), got null");
    ARCLIGHT_CHECK(!needs_buf2 || x.buf2 != nullptr, op, "tensor ", t,
                   ": amsgrad expects a max_exp_avg_sq buffer, got null");
    const int i = b.tensors++;
    b.param[i] = x.param;
    b.grad[i] = x.grad;
    b.buf0[i] = x.buf0;
    b.buf1[i] = x.buf1;
    b.buf2[i] = x.buf2;
    b.count[i] = x.count;
    if (b.tensors == kMaxOptimTensors) {
      launch(b);
      b.tensors = 0;
    }
  }
  if (b.tensors > 0) launch(b);
}

}  // namespace detail

void agc_clip(const AgcTensor* tensors_host, std::int64_t tensor_count, const AgcConfig& cfg, Stream stream) {
  const char* op = "cuda::agc_clip";
  ARCLIGHT_CHECK(std::isfinite(cfg.clip_factor) && cfg.clip_factor > 0.0, op,
                 "expected clip_factor > 0, got clip_factor=", cfg.clip_factor);
  ARCLIGHT_CHECK(std::isfinite(cfg.eps) && cfg.eps >= 0.0, op, "expected eps >= 0, got eps=", cfg.eps);
  ARCLIGHT_CHECK(tensor_count >= 0, op, "expected tensor_count >= 0, got ", tensor_count);
  if (tensor_count == 0) return;
  ARCLIGHT_CHECK(tensors_host != nullptr, op, "expected a host array of ", tensor_count, " tensors, got null");
  detail::AgcBatch b{};
  const auto launch = [&] {
    const std::int64_t warps_needed = b.unit_end[b.tensors - 1];
    const std::int64_t blocks = detail::ceil_div(warps_needed, detail::kAgcThreads / 32);
    detail::agc_multi_kernel<<<unsigned(blocks < 4096 ? blocks : 4096), detail::kAgcThreads, 0, stream>>>(
        b, float(cfg.clip_factor), float(cfg.eps));
    detail::check_launch(op);
    b.tensors = 0;
  };
  for (std::int64_t t = 0; t < tensor_count; ++t) {
    const AgcTensor& x = tensors_host[t];
    ARCLIGHT_CHECK(x.units >= 0 && x.unit_size > 0, op, "tensor ", t,
                   ": expected units >= 0 and unit_size > 0, got units=", x.units, " unit_size=", x.unit_size);
    if (x.units == 0) continue;
    ARCLIGHT_CHECK(x.param != nullptr && x.grad != nullptr, op, "tensor ", t, ": expected non-null param and grad");
    const int i = b.tensors++;
    b.param[i] = x.param;
    b.grad[i] = x.grad;
    b.unit_size[i] = x.unit_size;
    b.unit_end[i] = (i == 0 ? 0 : b.unit_end[i - 1]) + x.units;
    if (b.tensors == detail::kMaxOptimTensors) launch();
  }
  if (b.tensors > 0) launch();
}

void sgd_step(const OptimTensor* tensors_host, std::int64_t tensor_count, const SgdConfig& cfg, bool first_step,
              const float* lr_device, Stream stream) {
  const char* op = "cuda::sgd_step";
  cpu::validate_sgd(cfg);
  detail::for_each_batch(op, tensors_host, tensor_count, cfg.momentum != 0.0, false, false,
                         [&](const detail::OptimBatch& b) {
                           detail::OptimBatch bb = b;
                           if (cfg.momentum == 0.0)
                             for (int i = 0; i < bb.tensors; ++i) bb.buf0[i] = nullptr;
                           detail::sgd_multi_kernel<<<detail::optim_grid(bb), detail::kOptimThreads, 0, stream>>>(
                               bb, cfg, first_step, lr_device);
                           detail::check_launch(op);
                         });
}

void adamw_step(const OptimTensor* tensors_host, std::int64_t tensor_count, const AdamWConfig& cfg,
                std::int64_t step, const float* lr_device, Stream stream) {
  const char* op = "cuda::adamw_step";
  cpu::validate_adamw(cfg);
  ARCLIGHT_CHECK(step >= 1, op, "expected step >= 1 (the 1-based update count), got step=", step);
  detail::for_each_batch(op, tensors_host, tensor_count, true, true, cfg.amsgrad, [&](const detail::OptimBatch& b) {
    detail::adamw_multi_kernel<<<detail::optim_grid(b), detail::kOptimThreads, 0, stream>>>(b, cfg, step, lr_device);
    detail::check_launch(op);
  });
}

}  // namespace arclight::kernels::cuda
