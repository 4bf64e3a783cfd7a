// optim::SGD: stochastic gradient descent with momentum, dampening, Nesterov momentum and (L2, coupled)
// weight decay, with exactly torch.optim.SGD's semantics (1.13): d = g + wd·p; buf = d on a parameter's
// first update, then momentum·buf + (1 − dampening)·d; d = nesterov ? d + momentum·buf : buf; p −= lr·d.
// The reference recipe (METHOD.md §7) is momentum 0.9, Nesterov, lr 0.002, weight decay 1e-4 on the
// "decay" group. Each CPU parameter is updated in place by kernels/cpu/optim.hpp's sgd_step; device parameters
// by kernels/cuda/optim.cuh's multi-tensor sgd_step.
#pragma once

#include <map>
#include <tuple>

#include "arclight/optim/optimizer.hpp"

namespace arclight::optim {

struct SgdOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;  // default for groups that do not set their own
  bool nesterov = false;      // requires momentum > 0 and dampening = 0
};

class SGD : public Optimizer {
 public:
  // requires: PyTorch's rules (lr, momentum, weight_decay >= 0; Nesterov needs momentum > 0, dampening 0).
  SGD(std::vector<ParamGroup> groups, const SgdOptions& opt)
      : Optimizer("optim::SGD", std::move(groups), opt.lr, opt.weight_decay), opt_(opt) {
    kernels::cpu::validate_sgd(kernel_config(opt.lr, opt.weight_decay));
  }
  // One group holding `params` with the default weight decay.
  SGD(const std::vector<Tensor>& params, const SgdOptions& opt) : SGD(single_group(params), opt) {}

  const SgdOptions& options() const { return opt_; }

 protected:
  std::vector<std::string> buffer_names() const override { return {"momentum_buffer"}; }

  void update(std::size_t k, Tensor& param, const Tensor& grad, double lr, double weight_decay) override {
    const kernels::SgdConfig cfg = kernel_config(lr, weight_decay);
    bool first = false;
    const Tensor& buf = buffer_for(k, param, first);
    dispatch_floating(param.dtype(), "optim::SGD", [&]<typename T>() {
      kernels::cpu::sgd_step<T>(param.numel(), param.data_ptr<T>(), grad.data_ptr<T>(),
                                buf.defined() ? buf.data_ptr<T>() : nullptr, first, cfg);
    });
    ++param_steps_[k];
  }

  // Parameters sharing (lr, weight decay, first update or not) go in one multi-tensor launch.
  void update_device(const std::vector<DeviceUpdate>& updates) override {
    std::map<std::tuple<double, double, bool>, std::vector<cuda::detail::OptimUpdate>> launches;
    for (const auto& u : updates) {
      bool first = false;
      const Tensor& buf = buffer_for(u.k, u.param, first);
      launches[{u.lr, u.weight_decay, first}].push_back({u.param, u.grad, buf, Tensor(), Tensor()});
      ++param_steps_[u.k];
    }
    for (const auto& [key, items] : launches)
      cuda::detail::sgd_step(items, std::get<2>(key), kernel_config(std::get<0>(key), std::get<1>(key)));
  }

 private:
  // Parameter k's momentum buffer (undefined without momentum); first: whether this is its first update (the
  // buffer is then created uninitialised: the kernel writes it before reading).
  const Tensor& buffer_for(std::size_t k, const Tensor& param, bool& first) {
    ensure_state();
    Tensor& buf = state_[k][0];
    first = !buf.defined();
    if (first && opt_.momentum != 0.0) buf = empty(param.shape(), param.dtype(), param.device());
    return buf;
  }

  kernels::SgdConfig kernel_config(double lr, double weight_decay) const {
    kernels::SgdConfig c;
    c.lr = lr;
    c.momentum = opt_.momentum;
    c.dampening = opt_.dampening;
    c.weight_decay = weight_decay;
    c.nesterov = opt_.nesterov;
    return c;
  }

  SgdOptions opt_;
};

}  // namespace arclight::optim
