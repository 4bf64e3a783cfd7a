// optim::AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019) with exactly torch.optim.AdamW's
// semantics (1.13, single-tensor path): p *= 1 − lr·wd; m = β1·m + (1 − β1)·g; v = β2·v + (1 − β2)·g²;
// (amsgrad: v̂ = max(v̂, v)); p −= lr/(1 − β1^t) · m / (sqrt(v or v̂)/sqrt(1 − β2^t) + eps), with t the
// parameter's own update count. Each CPU parameter is updated in place by kernels/cpu/optim.hpp's adamw_step;
// device parameters by kernels/cuda/optim.cuh's multi-tensor adamw_step.
#pragma once

#include <map>
#include <tuple>

#include "arclight/optim/optimizer.hpp"

namespace arclight::optim {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // default for groups that do not set their own
  bool amsgrad = false;
};

class AdamW : public Optimizer {
 public:
  // requires: PyTorch's rules (lr, eps, weight_decay >= 0; betas in [0, 1)).
  AdamW(std::vector<ParamGroup> groups, const AdamWOptions& opt)
      : Optimizer("optim::AdamW", std::move(groups), opt.lr, opt.weight_decay), opt_(opt) {
    kernels::cpu::validate_adamw(kernel_config(opt.lr, opt.weight_decay));
  }
  AdamW(const std::vector<Tensor>& params, const AdamWOptions& opt) : AdamW(single_group(params), opt) {}

  const AdamWOptions& options() const { return opt_; }

 protected:
  std::vector<std::string> buffer_names() const override { return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}; }

  void update(std::size_t k, Tensor& param, const Tensor& grad, double lr, double weight_decay) override {
    auto& st = state_for(k, param);
    const std::int64_t step = ++param_steps_[k];
    const kernels::AdamWConfig cfg = kernel_config(lr, weight_decay);
    dispatch_floating(param.dtype(), "optim::AdamW", [&]<typename T>() {
      kernels::cpu::adamw_step<T>(param.numel(), param.data_ptr<T>(), grad.data_ptr<T>(), st[0].data_ptr<T>(),
                                  st[1].data_ptr<T>(), opt_.amsgrad ? st[2].data_ptr<T>() : nullptr, step, cfg);
    });
  }

  // Parameters sharing (lr, weight decay, update count) go in one multi-tensor launch; usually all of a group.
  void update_device(const std::vector<DeviceUpdate>& updates) override {
    std::map<std::tuple<double, double, std::int64_t>, std::vector<cuda::detail::OptimUpdate>> launches;
    for (const auto& u : updates) {
      auto& st = state_for(u.k, u.param);
      const std::int64_t step = ++param_steps_[u.k];
      launches[{u.lr, u.weight_decay, step}].push_back(
          {u.param, u.grad, st[0], st[1], opt_.amsgrad ? st[2] : Tensor()});
    }
    for (const auto& [key, items] : launches)
      cuda::detail::adamw_step(items, std::get<2>(key), kernel_config(std::get<0>(key), std::get<1>(key)));
  }

 private:
  // Parameter k's buffers, created (zeros on its device) at its first update.
  std::vector<Tensor>& state_for(std::size_t k, const Tensor& param) {
    ensure_state();
    auto& st = state_[k];
    if (!st[0].defined()) {
      st[0] = zeros(param.shape(), param.dtype(), param.device());
      st[1] = zeros(param.shape(), param.dtype(), param.device());
      if (opt_.amsgrad) st[2] = zeros(param.shape(), param.dtype(), param.device());
    }
    ARCLIGHT_CHECK(!opt_.amsgrad || st[2].defined(), "optim::AdamW", "parameter ", k,
                   " has no max_exp_avg_sq buffer (state loaded from a non-amsgrad AdamW)");
    return st;
  }

  kernels::AdamWConfig kernel_config(double lr, double weight_decay) const {
    kernels::AdamWConfig c;
    c.lr = lr;
    c.beta1 = opt_.beta1;
    c.beta2 = opt_.beta2;
    c.eps = opt_.eps;
    c.weight_decay = weight_decay;
    c.amsgrad = opt_.amsgrad;
    return c;
  }

  AdamWOptions opt_;
};

}  // namespace arclight::optim
