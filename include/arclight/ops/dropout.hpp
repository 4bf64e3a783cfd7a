// Differentiable dropout and drop-path (stochastic depth), the train-time regularisers of EfficientNet and
// NFNet. Both draw a Bernoulli keep-mask from an explicit arclight::Generator (Philox: the mask is a pure
// function of the generator's (seed, offset), so a run is reproducible and a test can fix it) and return
// x·mask/(1 − p) through the broadcasting mul op, whose backward is dL/dx = dy·mask/(1 − p).
//   dropout:   one draw per element (torch.nn.functional.dropout);
//   drop_path: one draw per sample, [N, 1, ..., 1], broadcast over the rest (timm's drop_path with
//              scale_by_keep=True): a residual branch is dropped for whole images.
// When not training, or p == 0, both return x itself and consume no random numbers.
#pragma once

#include <cmath>

#include "arclight/ops/activation.hpp"

namespace arclight::ops {

namespace detail {
// A [shape] mask of x's dtype on `device`: 1/keep where a uniform draw u < keep (probability keep), else 0. On a
// GPU the same Philox draws are made there (kernels/cuda/random.cuh): the mask equals the CPU's for the same
// generator state, so a run does not depend on where it runs, and nothing is uploaded.
inline Tensor keep_mask(const Shape& shape, DType dtype, double keep, Generator& gen, Device device = Device::cpu()) {
  if (device.is_cuda()) return cuda::detail::keep_mask(shape, keep, gen, device);  // f32 (device tensors are)
  const Tensor u = rand(shape, DType::f64, gen);
  Tensor mask = empty(shape, dtype);
  const double* up = u.data_ptr<double>();
  const double scale = keep > 0.0 ? 1.0 / keep : 0.0;
  dispatch_floating(dtype, "dropout", [&]<typename T>() {
    T* m = mask.data_ptr<T>();
    for (std::int64_t i = 0; i < mask.numel(); ++i) m[i] = up[i] < keep ? T(scale) : T(0);
  });
  return mask;
}

inline void check_drop_args(const Tensor& x, double p, const char* op) {
  check_floating_input(x, op, "input");
  ARCLIGHT_CHECK(std::isfinite(p) && p >= 0.0 && p <= 1.0, op, "drop probability must be in [0, 1], got ", p);
}
}  // namespace detail

// dropout: zeroes each element with probability p and scales the survivors by 1/(1 − p).
// requires: x a CPU f32/f64 or CUDA f32 tensor; 0 <= p <= 1.
// ensures: x itself when !training or p == 0 (no draws); otherwise a new tensor x·mask (all zeros for p == 1,
//   as torch) with the mask drawn from gen (x.numel() draws, advancing gen); records dL/dx = dy·mask.
inline Tensor dropout(const Tensor& x, double p, bool training, Generator& gen = default_generator()) {
  profiler::Scope profile_scope_("dropout");
  detail::check_drop_args(x, p, "dropout");
  if (!training || p == 0.0) return x;
  return mul(x, detail::keep_mask(x.shape(), x.dtype(), 1.0 - p, gen, x.device()));
}

// drop_path: zeroes whole samples (dim 0) with probability p and scales the kept ones by 1/(1 − p).
// requires: x a CPU f32/f64 or CUDA f32 tensor of rank >= 1 [N, ...]; 0 <= p <= 1.
// ensures: x itself when !training or p == 0 (no draws); otherwise a new tensor x·mask with mask [N, 1, ..., 1]
//   drawn from gen (N draws, advancing gen); records dL/dx = dy·mask (broadcast).
inline Tensor drop_path(const Tensor& x, double p, bool training, Generator& gen = default_generator()) {
  profiler::Scope profile_scope_("drop_path");
  detail::check_drop_args(x, p, "drop_path");
  ARCLIGHT_CHECK(x.dim() >= 1, "drop_path", "expected an input of rank >= 1 [N, ...], got ", x.str());
  if (!training || p == 0.0) return x;
  Shape mask_shape(static_cast<std::size_t>(x.dim()), 1);
  mask_shape[0] = x.shape()[0];
  return mul(x, detail::keep_mask(mask_shape, x.dtype(), 1.0 - p, gen, x.device()));
}

}  // namespace arclight::ops
