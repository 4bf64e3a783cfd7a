// Modules: runtime composition of layers (DESIGN.md §2). A Module owns named parameters (leaf tensors
// with requires_grad), named buffers (state without gradients, e.g. BN running stats) and named child
// modules. Names compose with dots exactly as PyTorch/timm state_dict keys ("blocks.0.conv.weight"), so
// exported weights load without renaming. train()/eval() propagate to children. Parameters are tensor
// handles shared between the module's own member fields and the registry, so loading weights in place
// (copy_) updates both.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "arclight/arclight.hpp"

namespace arclight::nn {

struct ParameterInfo {
  std::string name;     // fully qualified ("layer.0.weight")
  Tensor tensor;
  bool no_weight_decay;  // biases, norm weights, gains, GeM p: excluded from weight decay by default
};

class Module {
 public:
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The single-input forward most layers implement. Modules with other signatures provide their own.
  virtual Tensor forward(const Tensor& x) {
    fail(type_name_, "this module has no single-tensor forward()");
  }
  Tensor operator()(const Tensor& x) { return forward(x); }

  const std::string& type_name() const { return type_name_; }

  // ---- registration (call from constructors) ----
  // Registers t as a parameter (sets requires_grad) and returns the same handle.
  Tensor register_parameter(const std::string& name, Tensor t, bool no_weight_decay = false) {
    check_new_name(name);
    t.set_requires_grad(true);
    params_.push_back({name, t, no_weight_decay});
    return t;
  }
  Tensor register_buffer(const std::string& name, Tensor t) {
    check_new_name(name);
    buffers_.emplace_back(name, t);
    return t;
  }
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    check_new_name(name);
    ARCLIGHT_CHECK(m != nullptr, type_name_, "register_module('", name, "') got a null module");
    children_.emplace_back(name, m);
    return m;
  }

  // ---- traversal ----
  std::vector<ParameterInfo> named_parameters(bool recurse = true) const {
    std::vector<ParameterInfo> out;
    visit("", recurse, [&](const std::string& prefix, const Module& m) {
      for (const auto& p : m.params_) out.push_back({prefix + p.name, p.tensor, p.no_weight_decay});
    });
    return out;
  }
  std::vector<Tensor> parameters(bool recurse = true) const {
    std::vector<Tensor> out;
    for (auto& p : named_parameters(recurse)) out.push_back(p.tensor);
    return out;
  }
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const {
    std::vector<std::pair<std::string, Tensor>> out;
    visit("", recurse, [&](const std::string& prefix, const Module& m) {
      for (const auto& [n, t] : m.buffers_) out.emplace_back(prefix + n, t);
    });
    return out;
  }
  // Parameters then buffers of every module, in registration order (PyTorch's state_dict order per module
  // differs only in interleaving; lookups are by name).
  std::vector<std::pair<std::string, Tensor>> state_dict() const {
    std::vector<std::pair<std::string, Tensor>> out;
    visit("", true, [&](const std::string& prefix, const Module& m) {
      for (const auto& p : m.params_) out.emplace_back(prefix + p.name, p.tensor);
      for (const auto& [n, t] : m.buffers_) out.emplace_back(prefix + n, t);
    });
    return out;
  }
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }

  std::int64_t num_parameters() const {
    std::int64_t n = 0;
    for (auto& p : named_parameters()) n += p.tensor.numel();
    return n;
  }

  // ---- modes ----
  virtual void train(bool on = true) {
    training_ = on;
    for (auto& [n, c] : children_) c->train(on);
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }

  void zero_grad() {
    for (auto& p : named_parameters()) p.tensor.zero_grad();
  }

  // ---- devices ----
  // Moves every floating parameter and buffer of this module and its children (and any gradient already
  // accumulated) to `device`, in place: each tensor keeps its handle, so the layers' own members and the
  // registry see the new storage. Integer buffers (BatchNorm's num_batches_tracked) stay on the host: they are
  // counters the layers update there. Create optimizers after the move (their state lives beside the parameters).
  // Throws "Tensor::to: CUDA device requested but <reason>" where the device cannot be used.
  void to(Device device) {
    for (auto& [name, t] : state_dict())
      if (is_floating(t.dtype())) arclight::detail::relocate_(t, device);
  }
  // The device of the first floating parameter (CPU for a module without parameters).
  Device device() const {
    for (auto& p : named_parameters())
      if (is_floating(p.tensor.dtype())) return p.tensor.device();
    return Device::cpu();
  }

 protected:
  bool training_ = true;

 private:
  void check_new_name(const std::string& name) const {
    ARCLIGHT_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name_, "invalid member name '", name,
                   "' (non-empty, no dots)");
    for (const auto& p : params_) ARCLIGHT_CHECK(p.name != name, type_name_, "duplicate member name '", name, "'");
    for (const auto& b : buffers_) ARCLIGHT_CHECK(b.first != name, type_name_, "duplicate member name '", name, "'");
    for (const auto& c : children_) ARCLIGHT_CHECK(c.first != name, type_name_, "duplicate member name '", name, "'");
  }
  void visit(const std::string& prefix, bool recurse,
             const std::function<void(const std::string&, const Module&)>& f) const {
    f(prefix, *this);
    if (!recurse) return;
    for (const auto& [n, c] : children_) c->visit(prefix + n + ".", true, f);
  }

  std::string type_name_;
  std::vector<ParameterInfo> params_;  // names are local here
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// Runs children in order; children are named "0", "1", ... as torch.nn.Sequential.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  explicit Sequential(std::vector<std::shared_ptr<Module>> mods) : Module("Sequential") {
    for (auto& m : mods) push_back(std::move(m));
  }
  void push_back(std::shared_ptr<Module> m) {
    register_module(std::to_string(layers_.size()), m);
    layers_.push_back(std::move(m));
  }
  std::size_t size() const { return layers_.size(); }
  const std::shared_ptr<Module>& operator[](std::size_t i) const { return layers_.at(i); }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (auto& m : layers_) h = m->forward(h);
    return h;
  }

 private:
  std::vector<std::shared_ptr<Module>> layers_;
};

}  // namespace arclight::nn
