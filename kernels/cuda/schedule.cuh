// The learning-rate schedule evaluated on the device (kernels/common/schedule_math.hpp, the same pure
// function the CPU uses), so that a captured training step reads its lr from device memory and a CUDA graph
// can be replayed step after step without the host writing a new lr. Validation is the CPU's
// (kernels::cpu::validate_schedule).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/common/schedule_math.hpp"
#include "kernels/cpu/schedule.hpp"
#include "kernels/cuda/common.cuh"

namespace arclight::kernels::cuda {

namespace detail {

__global__ void schedule_lr_step_kernel(ScheduleConfig cfg, std::int64_t* step, std::int64_t steps_per_unit,
                                        bool advance, float* lr) {
  const std::int64_t s = *step;
  const double t = s < 0 ? 0.0 : double(s) / double(steps_per_unit);
  *lr = float(schedule_lr(t, cfg));
  if (advance) *step = s + 1;
}

__global__ void schedule_lr_many_kernel(ScheduleConfig cfg, const double* __restrict__ t, std::int64_t count,
                                        double* __restrict__ lr) {
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += std::int64_t(gridDim.x) * blockDim.x)
    lr[i] = schedule_lr(t[i] < 0.0 ? 0.0 : t[i], cfg);
}

}  // namespace detail

void schedule_lr_device(const ScheduleConfig& cfg, std::int64_t* step, std::int64_t steps_per_unit, bool advance,
                        float* lr, Stream stream) {
  const char* op = "cuda::schedule_lr_device";
  cpu::validate_schedule(cfg);
  ARCLIGHT_CHECK(steps_per_unit >= 1, op, "expected steps_per_unit >= 1, got ", steps_per_unit);
  ARCLIGHT_CHECK(step != nullptr && lr != nullptr, op, "expected non-null step and lr");
  detail::schedule_lr_step_kernel<<<1, 1, 0, stream>>>(cfg, step, steps_per_unit, advance, lr);
  detail::check_launch(op);
}

void schedule_lr_many(const ScheduleConfig& cfg, const double* t, std::int64_t count, double* lr, Stream stream) {
  const char* op = "cuda::schedule_lr_many";
  cpu::validate_schedule(cfg);
  ARCLIGHT_CHECK(count >= 0, op, "expected count >= 0, got ", count);
  if (count == 0) return;
  ARCLIGHT_CHECK(t != nullptr && lr != nullptr, op, "expected non-null t and lr");
  detail::schedule_lr_many_kernel<<<detail::elementwise_grid(count, 256), 256, 0, stream>>>(cfg, t, count, lr);
  detail::check_launch(op);
}

}  // namespace arclight::kernels::cuda
