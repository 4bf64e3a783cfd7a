// Dynamic loss scaling for fp16 mixed precision (PyTorch's GradScaler semantics). fp16 gradients underflow
// unless the loss is multiplied by a large scale S before backward; the gradients are then unscaled by 1/S
// (kernels/cuda/amp.cuh: amp_unscale, which also flags inf/NaN) before the optimizer step. The scaler's policy:
// a step whose gradients hold an inf or NaN is SKIPPED and S is multiplied by backoff_factor; after
// growth_interval good steps in a row S is multiplied by growth_factor (kept when that would overflow float).
// GradScaler is the host-side state machine (pure C++, tested without a GPU); with the CUDA backend it also
// runs the unscale on the device and reads the flag back. State (scale, growth tracker) goes into checkpoints
// through state() / load_state().
//
// On Tensors and optimizers (the training loop a user writes, as with torch.cuda.amp.GradScaler):
//   cuda::AutocastScope amp(DType::f16);            // convs and GEMMs in fp16 (arclight/cuda/tensor_ops.hpp)
//   Tensor loss = model.loss(x, y);
//   scaler.scale_loss(loss).backward();              // gradients are scale() times too large
//   scaler.step(opt);                                // unscale in place, skip on inf/NaN, else opt.step(); update
//   opt.zero_grad();
// Works for CPU parameters too (exact loss scaling without autocast), and in a build without the CUDA backend.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/cuda/runtime.hpp"
#include "arclight/optim/optimizer.hpp"

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

  // loss · scale(), recorded for autograd (so backward produces scale()-times gradients); `loss` itself when the
  // scaler is disabled. requires: loss a defined floating tensor (any device; usually the 0-d training loss).
  Tensor scale_loss(const Tensor& loss) const {
    ARCLIGHT_CHECK(loss.defined(), "GradScaler::scale_loss", "got an undefined tensor");
    if (!cfg_.enabled) return loss;
    return ops::mul(loss, state_.scale);
  }

  // One optimizer step under loss scaling. Unscales every gradient of opt's parameters in place by 1/scale()
  // (parameters without a gradient are skipped; a non-contiguous gradient is first replaced by a contiguous copy):
  // device gradients with amp_unscale (batched launches, one flag read back), CPU gradients (f32 / f64) with a host
  // loop that also looks for inf/NaN. Then, unless some gradient held an inf or NaN, runs opt.step() (AGC and
  // post-step hooks included, on the unscaled gradients), and finally update(found_inf). Returns whether the
  // optimizer stepped. A skipped step leaves the parameters and the optimizer's state (buffers, step counts)
  // untouched; the gradients stay unscaled (with their inf/NaN) until the caller's zero_grad().
  // Disabled scaler: exactly opt.step() (no unscale, no check), returns true.
  bool step(optim::Optimizer& opt) {
    if (!cfg_.enabled) {
      opt.step();
      return true;
    }
    const bool found_inf = unscale_gradients(opt);
    if (!found_inf) opt.step();
    return update(found_inf);
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
  // The unscale half of step(): every defined gradient of opt's parameters multiplied by 1/scale() in place;
  // returns whether any held an inf or NaN before.
  bool unscale_gradients(optim::Optimizer& opt) {
    const char* op = "GradScaler::step";
    const double inv = 1.0 / state_.scale;
    bool found = false;
#ifdef ARCLIGHT_WITH_CUDA
    std::vector<kernels::cuda::AmpTensor> device_grads;
#endif
    for (const optim::ParamGroup& group : opt.param_groups())
      for (const Tensor& p : group.params) {
        const Tensor g = optim::detail::contiguous_grad_(p);
        if (!g.defined()) continue;
        if (g.device().is_cuda()) {
          ARCLIGHT_CHECK(g.dtype() == DType::f32, op, "expected float32 device gradients, got ", g.str(), " for ",
                         p.str());
#ifdef ARCLIGHT_WITH_CUDA
          device_grads.push_back({g.data_ptr<float>(), g.numel()});
#endif
          continue;
        }
        ARCLIGHT_CHECK(g.dtype() == DType::f32 || g.dtype() == DType::f64, op, "expected f32/f64 CPU gradients, got ",
                       g.str(), " for ", p.str());
        if (g.dtype() == DType::f32)
          found = unscale_host(g.data_ptr<float>(), g.numel(), float(inv)) || found;
        else
          found = unscale_host(g.data_ptr<double>(), g.numel(), inv) || found;
      }
#ifdef ARCLIGHT_WITH_CUDA
    if (!device_grads.empty()) found = unscale(device_grads) || found;
#endif
    return found;
  }

  // g[i] *= inv for i < n; returns whether any g[i] was inf or NaN.
  template <typename T>
  static bool unscale_host(T* g, std::int64_t n, T inv) {
    bool bad = false;
    for (std::int64_t i = 0; i < n; ++i) {
      bad = bad || !std::isfinite(g[i]);
      g[i] *= inv;
    }
    return bad;
  }

  GradScalerConfig cfg_;
  GradScalerState state_;
  std::int64_t skipped_ = 0;
#ifdef ARCLIGHT_WITH_CUDA
  DeviceBuffer<float> flags_;
#endif
};

}  // namespace arclight::cuda
