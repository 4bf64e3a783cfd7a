// The optimizer layer's common machinery (arclight::optim): parameter groups, the Optimizer base class
// (zero_grad, lr control for the schedule, optional Adaptive Gradient Clipping per group, post-step hooks,
// per-parameter state exposed for checkpoints) and param_groups(), the default split of a module's
// parameters into weight-decay and no-decay groups. Concrete update rules live in optim/sgd.hpp and
// optim/adamw.hpp: they run the flat CPU kernels of kernels/cpu/optim.hpp on each CPU parameter in place, and
// update a step's device parameters together in multi-tensor launches (one per 48 tensors that share lr, weight
// decay and update count); AGC on the device is one multi-tensor launch as well.
//
// Learning rates: the optimizer has one lr (set by the schedule through set_lr); group g steps with
// lr·lr_scale_g. Weight decay: each group has its own, or the optimizer's default when unset.
#pragma once

#include <cmath>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "arclight/arclight.hpp"
#include "arclight/nn/module.hpp"
#include "arclight/optim/agc.hpp"

namespace arclight::optim {

struct ParamGroup {
  std::vector<Tensor> params;
  double lr_scale = 1.0;                // this group's lr = optimizer lr × lr_scale (>= 0)
  std::optional<double> weight_decay;   // nullopt: the optimizer's default weight decay
  bool agc = true;                      // clipped by AGC when the optimizer has AGC on (false: e.g. the head)
  std::string name;                     // for messages and checkpoints ("decay", "no_decay", ...)
};

// The default grouping: parameters flagged no_weight_decay (GeM p, biases registered so) and every
// parameter of rank <= 1 (biases, norm weights, gains) go to a group "no_decay" with weight decay 0, the
// rest to "decay" with `weight_decay`. Parameters whose qualified name starts with one of
// `agc_exempt_prefixes` (e.g. {"head."}, timm's clipping exemption of the final layer) go to groups
// "head_decay" / "head_no_decay" with agc = false. Empty groups are dropped; order within a group is the
// module's parameter order.
inline std::vector<ParamGroup> param_groups(const nn::Module& module, double weight_decay,
                                            const std::vector<std::string>& agc_exempt_prefixes = {}) {
  ARCLIGHT_CHECK(std::isfinite(weight_decay) && weight_decay >= 0.0, "optim::param_groups",
                 "expected weight_decay >= 0, got ", weight_decay);
  ParamGroup decay{{}, 1.0, weight_decay, true, "decay"};
  ParamGroup no_decay{{}, 1.0, 0.0, true, "no_decay"};
  ParamGroup head_decay{{}, 1.0, weight_decay, false, "head_decay"};
  ParamGroup head_no_decay{{}, 1.0, 0.0, false, "head_no_decay"};
  for (const auto& p : module.named_parameters()) {
    bool exempt = false;
    for (const auto& prefix : agc_exempt_prefixes) exempt = exempt || p.name.rfind(prefix, 0) == 0;
    const bool no_wd = p.no_weight_decay || p.tensor.dim() <= 1;
    ParamGroup& g = exempt ? (no_wd ? head_no_decay : head_decay) : (no_wd ? no_decay : decay);
    g.params.push_back(p.tensor);
  }
  std::vector<ParamGroup> out;
  for (ParamGroup* g : {&decay, &no_decay, &head_decay, &head_no_decay})
    if (!g->params.empty()) out.push_back(std::move(*g));
  return out;
}

// One group holding `params`, with the optimizer's default weight decay, lr scale 1 and AGC on.
inline std::vector<ParamGroup> single_group(const std::vector<Tensor>& params) {
  ParamGroup g;
  g.params = params;
  g.name = "default";
  return {g};
}

// The state of an optimizer for a checkpoint: the number of step() calls and named tensors
// ("state.<k>.<buffer>", k = the parameter's index over all groups in order; see Optimizer::state_dict).
struct OptimizerState {
  std::int64_t step = 0;
  double lr = 0.0;
  std::vector<std::pair<std::string, Tensor>> tensors;

  const Tensor* find(const std::string& name) const {
    for (const auto& [n, t] : tensors)
      if (n == name) return &t;
    return nullptr;
  }
};

// L2 norm of all gradients of `groups` together (missing gradients count as 0), in double: the trainer's
// non-finite check (DESIGN.md §2) and the usual gradient-norm log.
inline double global_grad_norm(const std::vector<ParamGroup>& groups) {
  double ss = 0.0;
  Tensor device_ss;  // device gradients: the squares summed on the device, one value read back at the end
  for (const auto& g : groups)
    for (const auto& p : g.params) {
      const Tensor gr = p.grad();
      if (!gr.defined()) continue;
      if (gr.device().is_cuda()) {
        const Tensor part = ops::sum(ops::mul(gr, gr));
        device_ss = device_ss.defined() ? ops::add(device_ss, part) : part;
        continue;
      }
      for (double v : gr.to_vector<double>()) ss += v * v;
    }
  if (device_ss.defined()) ss += device_ss.item();
  return std::sqrt(ss);
}

class Optimizer {
 public:
  // requires: every parameter a defined, contiguous leaf that requires grad (f32/f64 on the CPU, or f32 on a CUDA
  //   device; all on one device), in one group only; lr >= 0; lr_scale >= 0 and weight decays >= 0. (Else
  //   arclight::Error naming the optimizer.)
  Optimizer(std::string name, std::vector<ParamGroup> groups, double lr, double default_weight_decay)
      : name_(std::move(name)), groups_(std::move(groups)), default_weight_decay_(default_weight_decay) {
    set_lr(lr);
    ARCLIGHT_CHECK(std::isfinite(default_weight_decay) && default_weight_decay >= 0.0, name_,
                   "expected weight_decay >= 0, got ", default_weight_decay);
    ARCLIGHT_CHECK(!groups_.empty(), name_, "expected at least one parameter group");
    std::set<const TensorImpl*> seen;
    const Tensor* first_param = nullptr;
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      const ParamGroup& grp = groups_[g];
      ARCLIGHT_CHECK(std::isfinite(grp.lr_scale) && grp.lr_scale >= 0.0, name_, "group ", g, " ('", grp.name,
                     "'): expected lr_scale >= 0, got ", grp.lr_scale);
      ARCLIGHT_CHECK(!grp.weight_decay || (std::isfinite(*grp.weight_decay) && *grp.weight_decay >= 0.0), name_,
                     "group ", g, " ('", grp.name, "'): expected weight_decay >= 0, got ", grp.weight_decay.value_or(0));
      for (std::size_t i = 0; i < grp.params.size(); ++i) {
        const Tensor& p = grp.params[i];
        ARCLIGHT_CHECK(p.defined(), name_, "group ", g, " parameter ", i, " is undefined");
        if (!first_param) first_param = &p;
        ARCLIGHT_CHECK(p.device() == first_param->device(), name_, "group ", g, " parameter ", i, " ", p.str(),
                       " is on another device than the first parameter (", first_param->str(),
                       "): move the whole model with Module::to first");
        ARCLIGHT_CHECK(p.device().is_cpu() ? (p.dtype() == DType::f32 || p.dtype() == DType::f64) && p.is_contiguous()
                                           : p.dtype() == DType::f32 && p.is_contiguous(),
                       name_, "group ", g, " parameter ", i, " ", p.str(),
                       ": expected a contiguous f32/f64 CPU tensor or a contiguous f32 CUDA tensor");
        ARCLIGHT_CHECK(p.is_leaf() && p.requires_grad(), name_, "group ", g, " parameter ", i, " ", p.str(),
                       ": expected a leaf that requires grad");
        ARCLIGHT_CHECK(seen.insert(&p.impl()).second, name_, "group ", g, " parameter ", i, " ", p.str(),
                       " appears more than once in the parameter groups");
        index_.push_back({g, i});
      }
    }
  }
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient (parameters without one are skipped and keep their
  // state, as PyTorch). Under NoGradGuard: (1) AGC clips the gradients of agc groups in place when AGC is
  // on, (2) the update rule runs in place on each parameter (device parameters batched), (3) the post-step
  // hooks run in order.
  void step() {
    profiler::Scope profile_scope_(name_.c_str());
    NoGradGuard ng;
    if (agc_) {
      std::vector<Tensor> clipped;
      for (const auto& grp : groups_)
        if (grp.agc) clipped.insert(clipped.end(), grp.params.begin(), grp.params.end());
      adaptive_clip_grad_(clipped, *agc_);
    }
    std::vector<DeviceUpdate> device;
    for (std::size_t k = 0; k < index_.size(); ++k) {
      const auto [g, i] = index_[k];
      Tensor p = groups_[g].params[i];
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      ARCLIGHT_CHECK(grad.shape() == p.shape() && grad.dtype() == p.dtype() && grad.device() == p.device(), name_,
                     "gradient ", grad.str(), " does not match parameter ", p.str());
      if (!grad.is_contiguous()) grad = arclight::detail::copy_contiguous(grad);
      if (p.device().is_cuda())
        device.push_back({k, p, grad, group_lr(g), group_weight_decay(g)});
      else
        update(k, p, grad, group_lr(g), group_weight_decay(g));
    }
    if (!device.empty()) update_device(device);
    ++step_count_;
    for (auto& h : hooks_) h();
  }

  // Drops every parameter's gradient (the next backward starts from nothing).
  void zero_grad() {
    profiler::Scope profile_scope_("zero_grad");
    for (auto& grp : groups_)
      for (auto& p : grp.params) p.zero_grad();
  }

  // The base learning rate (the schedule calls this). requires: lr >= 0, finite.
  void set_lr(double lr) {
    ARCLIGHT_CHECK(std::isfinite(lr) && lr >= 0.0, name_, "expected lr >= 0 (finite), got lr=", lr);
    lr_ = lr;
  }
  double lr() const { return lr_; }
  double group_lr(std::size_t g) const { return lr_ * groups_.at(g).lr_scale; }
  double group_weight_decay(std::size_t g) const { return groups_.at(g).weight_decay.value_or(default_weight_decay_); }

  // Adaptive Gradient Clipping applied by step() to groups with agc = true; nullopt turns it off.
  void set_agc(std::optional<AgcConfig> cfg) {
    if (cfg) validate_agc(*cfg);
    agc_ = cfg;
  }
  const std::optional<AgcConfig>& agc() const { return agc_; }

  // Runs f at the end of every step() (e.g. nn::clamp_gem_p_ keeping GeM's p >= 1).
  void add_post_step_hook(std::function<void()> f) { hooks_.push_back(std::move(f)); }

  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  std::int64_t step_count() const { return step_count_; }
  const std::string& name() const { return name_; }
  std::size_t num_params() const { return index_.size(); }

  // The state for a checkpoint: step count, lr and, per parameter k with state, "state.<k>.<buffer>"
  // tensors (aliases of the live buffers: serialise before the next step) and "state.<k>.step" (i64 0-d).
  OptimizerState state_dict() const {
    OptimizerState s;
    s.step = step_count_;
    s.lr = lr_;
    const auto names = buffer_names();
    for (std::size_t k = 0; k < state_.size(); ++k) {
      if (param_steps_[k] == 0) continue;
      for (std::size_t b = 0; b < names.size(); ++b)
        if (state_[k][b].defined()) s.tensors.emplace_back(key(k, names[b]), state_[k][b]);
      s.tensors.emplace_back(key(k, "step"), full({}, double(param_steps_[k]), DType::i64));
    }
    return s;
  }

  // Restores a state_dict() of an optimizer of the same kind over parameters of the same shapes (copies the
  // buffers; restores the step counts, and the lr when s.lr > 0 — a schedule re-derives it anyway).
  // requires: every tensor name known, shapes and dtypes equal to the parameters' (else arclight::Error,
  // and the optimizer is left unchanged).
  void load_state_dict(const OptimizerState& s) {
    ARCLIGHT_CHECK(s.step >= 0, name_, "load_state_dict: negative step count ", s.step);
    const auto names = buffer_names();
    std::vector<std::vector<Tensor>> state(index_.size(), std::vector<Tensor>(names.size()));
    std::vector<std::int64_t> steps(index_.size(), 0);
    for (const auto& [n, t] : s.tensors) {
      std::size_t k = 0;
      std::string buf;
      ARCLIGHT_CHECK(parse_key(n, k, buf), name_, "load_state_dict: unexpected tensor name '", n,
                     "' (expected state.<k>.<buffer>)");
      ARCLIGHT_CHECK(k < index_.size(), name_, "load_state_dict: '", n, "' refers to parameter ", k, " but there are ",
                     index_.size());
      const Tensor& p = param(k);
      if (buf == "step") {
        ARCLIGHT_CHECK(t.numel() == 1 && t.item() >= 1, name_, "load_state_dict: '", n,
                       "' must be one value >= 1, got ", t.str());
        steps[k] = std::int64_t(t.item());
        continue;
      }
      std::size_t b = 0;
      while (b < names.size() && names[b] != buf) ++b;
      ARCLIGHT_CHECK(b < names.size(), name_, "load_state_dict: unknown buffer '", buf, "' in '", n, "'");
      ARCLIGHT_CHECK(t.shape() == p.shape() && t.dtype() == p.dtype(), name_, "load_state_dict: '", n, "' is ",
                     t.str(), " but parameter ", k, " is ", p.str());
      // A private contiguous copy on the parameter's device (a checkpoint is read on the host).
      state[k][b] = t.device() == p.device() ? arclight::detail::copy_contiguous(t) : t.to(p.device());
    }
    for (std::size_t k = 0; k < index_.size(); ++k) {
      bool any = false;
      for (const auto& t : state[k]) any = any || t.defined();
      ARCLIGHT_CHECK(!any || steps[k] > 0, name_, "load_state_dict: parameter ", k,
                     " has buffers but no step count");
    }
    state_ = std::move(state);
    param_steps_ = std::move(steps);
    step_count_ = s.step;
    if (s.lr > 0.0) set_lr(s.lr);
  }

 protected:
  // Updates CPU parameter k (flat index) in place from its contiguous gradient with this group's lr and wd.
  virtual void update(std::size_t k, Tensor& param, const Tensor& grad, double lr, double weight_decay) = 0;

  // One device parameter of a step: flat index, the parameter, its contiguous gradient, its group's lr and wd.
  struct DeviceUpdate {
    std::size_t k;
    Tensor param, grad;
    double lr, weight_decay;
  };
  // Updates all device parameters of one step in place. The rules batch parameters that share their launch
  // constants (lr, wd, update count) into multi-tensor launches (kernels/cuda/optim.cuh).
  virtual void update_device(const std::vector<DeviceUpdate>& updates) = 0;
  // Names of the per-parameter buffers, in the order of state_[k].
  virtual std::vector<std::string> buffer_names() const = 0;

  // Per-parameter state, sized lazily by the subclass: state_[k][b] is buffer b of parameter k.
  void ensure_state() {
    if (state_.size() == index_.size()) return;
    state_.assign(index_.size(), std::vector<Tensor>(buffer_names().size()));
    param_steps_.assign(index_.size(), 0);
  }
  const Tensor& param(std::size_t k) const { return groups_[index_[k].first].params[index_[k].second]; }

  std::vector<std::vector<Tensor>> state_;
  std::vector<std::int64_t> param_steps_;  // updates applied to each parameter

 private:
  static std::string key(std::size_t k, const std::string& buf) { return "state." + std::to_string(k) + "." + buf; }
  static bool parse_key(const std::string& n, std::size_t& k, std::string& buf) {
    if (n.rfind("state.", 0) != 0) return false;
    const std::size_t dot = n.find('.', 6);
    if (dot == std::string::npos || dot == 6 || dot + 1 >= n.size()) return false;
    for (std::size_t i = 6; i < dot; ++i)
      if (n[i] < '0' || n[i] > '9') return false;
    k = std::stoull(n.substr(6, dot - 6));
    buf = n.substr(dot + 1);
    return true;
  }

  std::string name_;
  std::vector<ParamGroup> groups_;
  std::vector<std::pair<std::size_t, std::size_t>> index_;  // flat k → (group, position)
  double lr_ = 0.0;
  double default_weight_decay_ = 0.0;
  std::int64_t step_count_ = 0;
  std::optional<AgcConfig> agc_;
  std::vector<std::function<void()>> hooks_;
};

}  // namespace arclight::optim
