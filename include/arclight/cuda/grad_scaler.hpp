// Dynamic loss scaling for fp16 mixed precision (PyTorch's GradScaler semantics). fp16 gradients underflow
// unless the loss is multiplied by a large scale S before backward; the gradients are then unscaled by 1/S
// (kernels/cuda/amp.cuh: amp_unscale, which also flags inf/NaN) before the optimizer step. The scaler's policy:
// a step whose gradients hold an inf or NaN is SKIPPED and S is multiplied by backoff_factor; after
// growth_interval good steps in a row S is multiplied by growth_factor (kept when that would overflow float).
// GradScaler is the host-side state machine (pure C++, tested without a GPU); with the CUDA backend it also
// runs the unscale on the device and reads the flag back. State (scale, growth tracker) goes into checkpoints
// through state() / load_state().
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/cuda/runtime.hpp"

namespace arclight::cuda {

struct GradScalerConfig {
  double init_scale = 65536.0;  // 2^16, PyTorch's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  std::int64_t growth_interval = 2000;
  bool enabled = true;  // disabled: scale 1, unscale is a no-op check, every step taken
};

struct GradScalerState {
  double scale = 65536.0;
  std::int64_t growth_tracker = 0;  // good steps since the last change of scale
};

class GradScaler {
 public:
  // requires: init_scale finite > 0, growth_factor > 1, 0 < backoff_factor < 1, growth_interval >= 1.
  explicit GradScaler(const GradScalerConfig& cfg = {}) : cfg_(cfg) {
    const char* op = "GradScaler";
    ARCLIGHT_CHECK(std::isfinite(cfg.init_scale) && cfg.init_scale > 0, op, "expected a finite init_scale > 0, got ",
                   cfg.init_scale);
    ARCLIGHT_CHECK(cfg.growth_factor > 1 && std::isfinite(cfg.growth_factor), op,
                   "expected a finite growth_factor > 1, got ", cfg.growth_factor);
    ARCLIGHT_CHECK(cfg.backoff_factor > 0 && cfg.backoff_factor < 1, op, "expected backoff_factor in (0, 1), got ",
                   cfg.backoff_factor);
    ARCLIGHT_CHECK(cfg.growth_interval >= 1, op, "expected growth_interval >= 1, got ", cfg.growth_interval);
    state_.scale = cfg.enabled ? cfg.init_scale : 1.0;
  }

  bool enabled() const { return cfg_.enabled; }
  // The factor the loss is multiplied by before backward.
  double scale() const { return state_.scale; }
  std::int64_t growth_tracker() const { return state_.growth_tracker; }
  std::int64_t skipped_steps() const { return skipped_; }

  // Records the outcome of one step's unscale and returns whether the optimizer step must run (false: skip it,
  // the gradients hold inf/NaN). Updates the scale as described in the file comment.
  bool update(bool found_inf) {
    if (!cfg_.enabled) return !found_inf;
    if (found_inf) {
      state_.scale *= cfg_.backoff_factor;
      state_.growth_tracker = 0;
      ++skipped_;
      return false;
    }
    if (++state_.growth_tracker >= cfg_.growth_interval) {
      const double grown = state_.scale * cfg_.growth_factor;
      if (grown <= double(std::numeric_limits<float>::max())) state_.scale = grown;
      state_.growth_tracker = 0;
    }
    return true;
  }

  GradScalerState state() const { return state_; }
  // requires: scale finite > 0, growth_tracker >= 0 (a checkpoint's values).
  void load_state(const GradScalerState& s) {
    ARCLIGHT_CHECK(std::isfinite(s.scale) && s.scale > 0 && s.growth_tracker >= 0, "GradScaler::load_state",
                   "expected a finite scale > 0 and growth_tracker >= 0, got scale=", s.scale,
                   " growth_tracker=", s.growth_tracker);
    state_ = s;
  }

#ifdef ARCLIGHT_WITH_CUDA
  // Unscales the device gradients in place by 1/scale() (one amp_unscale launch per 64 tensors) and returns
  // whether any of them held an inf or NaN. Blocking: waits for `stream` to read the flag. Does NOT update the
  // scale (call update() with the result). requires: available(); tensors as amp_unscale requires.
  bool unscale(const std::vector<kernels::cuda::AmpTensor>& grads, Stream stream = nullptr) {
    const char* op = "GradScaler::unscale";
    require_available(op);
    if (flags_.size() == 0) flags_ = DeviceBuffer<float>(2, op);
    const float host[2] = {float(1.0 / state_.scale), 0.f};  // [inv_scale, found_inf]
    kernels::cuda::memcpy_host_to_device(flags_.data(), host, sizeof host, stream, op);
    kernels::cuda::amp_unscale(grads.data(), std::int64_t(grads.size()), flags_.data(), flags_.data() + 1, stream);
    float found = 0.f;
    kernels::cuda::memcpy_device_to_host(&found, flags_.data() + 1, sizeof found, stream, op);  // synchronises
    kernels::cuda::synchronize(stream, op);
    return found != 0.f;
  }
#endif

 private:
  GradScalerConfig cfg_;
  GradScalerState state_;
  std::int64_t skipped_ = 0;
#ifdef ARCLIGHT_WITH_CUDA
  DeviceBuffer<float> flags_;
#endif
};

}  // namespace arclight::cuda
