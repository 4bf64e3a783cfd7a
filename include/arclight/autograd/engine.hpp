// The define-by-run autograd tape and its backward engine.
//
// Every recorded op creates one Node holding a backward function (a closure over the tensors it saved)
// and one Edge per input leading to the node that produced that input, or to the AccumulateGrad node of
// a leaf. Outputs point to their node through TensorImpl::grad_fn; nodes never point back to their
// outputs (ops save detached aliases), so the graph has no cycles and is freed as soon as the last
// output lets go of it. backward() counts dependencies with one sweep from the root, then runs the nodes
// in topological order, summing the gradients that meet at a node, and releases each node's saved
// tensors after use unless the graph is retained.
//
// This file is included at the end of core/tensor.hpp (the engine is part of Tensor's contract); include
// that header, not this one.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "arclight/core/profiler.hpp"
#include "arclight/core/tensor.hpp"
#include "kernels/cpu/strided_loop.hpp"

namespace arclight {

struct Edge {
  std::shared_ptr<Node> node;  // null: the input needs no gradient
  int input_nr = 0;            // which output of `node` the input was
};

class Node {
 public:
  using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

  Node(std::string name, BackwardFn fn) : name_(std::move(name)), backward_(std::move(fn)) {}
  virtual ~Node() = default;

  const std::string& name() const { return name_; }
  std::vector<Edge>& next_edges() { return next_; }
  const std::vector<Edge>& next_edges() const { return next_; }

  // Shapes/dtypes of the node's outputs (to seed a zero gradient for an output nobody used) and of its
  // inputs (the engine checks returned gradients against them).
  std::vector<Shape> output_shapes;
  std::vector<DType> output_dtypes;
  std::vector<Device> output_devices;
  std::vector<Shape> input_shapes;

  // Computes the gradients of the inputs, one per edge (undefined where the edge needs none).
  virtual std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) {
    if (!backward_)
      fail("backward", "node '", name_,
           "' was already used by an earlier backward() and its saved tensors were freed; "
           "pass retain_graph=true to the first backward() to differentiate the same graph twice");
    return backward_(grad_outputs);
  }
  // Frees the saved tensors (the closure).
  virtual void release() { backward_ = nullptr; }

 protected:
  std::string name_;
  BackwardFn backward_;
  std::vector<Edge> next_;
};

namespace detail {
// Builds the strided-loop description of same-shape tensors (operand 0 is usually the output).
template <typename T, int N>
kernels::cpu::StridedOperands<N> same_shape_operands(const std::array<const Tensor*, N>& ts) {
  kernels::cpu::StridedOperands<N> op;
  op.ndim = static_cast<int>(ts[0]->dim());
  ARCLIGHT_CHECK(op.ndim <= kernels::cpu::kMaxDims, "strided loop", "tensors of rank ", op.ndim, " exceed the maximum rank ",
                 kernels::cpu::kMaxDims);
  for (int k = 0; k < N; ++k) {
    op.base[k] = static_cast<char*>(ts[k]->raw_data());
    for (int d = 0; d < op.ndim; ++d) op.strides[k][d] = ts[k]->strides()[d] * static_cast<std::int64_t>(sizeof(T));
  }
  for (int d = 0; d < op.ndim; ++d) op.sizes[d] = ts[0]->shape()[d];
  return op;
}

// A contiguous copy of t (same dtype).
inline Tensor copy_contiguous(const Tensor& t) {
  if (t.device().is_cuda()) return cuda::detail::copy_contiguous(t);
  Tensor out = empty(t.shape(), t.dtype());
  dispatch_all(t.dtype(), "copy", [&]<typename T>() {
    kernels::cpu::strided_map<T, T>(same_shape_operands<T, 2>({&out, &t}), [](T x) { return x; });
  });
  return out;
}

// Returns a + b as a new contiguous tensor. requires: same shape and dtype (gradients of one value).
inline Tensor add_same_shape(const Tensor& a, const Tensor& b) {
  ARCLIGHT_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype(), "backward",
                 "gradients to accumulate disagree: ", a.str(), " vs ", b.str());
  ARCLIGHT_CHECK(a.device() == b.device(), "backward", "gradients to accumulate are on different devices: ", a.str(),
                 " vs ", b.str());
  Tensor out = empty(a.shape(), a.dtype(), a.device());
  if (a.device().is_cuda()) {
    cuda::detail::binary(kernels::EwOp::kAdd, out, a, b, "backward");
    return out;
  }
  dispatch_floating(a.dtype(), "backward", [&]<typename T>() {
    kernels::cpu::strided_map<T, T, T>(same_shape_operands<T, 3>({&out, &a, &b}), [](T x, T y) { return x + y; });
  });
  return out;
}
}  // namespace detail

// The sink of a leaf: adds the incoming gradient into leaf.grad (a fresh contiguous tensor the first
// time, in place afterwards).
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : Node("AccumulateGrad", nullptr), leaf_(std::move(leaf)) {}
  std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) override {
    const Tensor& g = grad_outputs.at(0);
    if (!g.defined()) return {};
    if (leaf_->grad) {
      leaf_->grad = detail::add_same_shape(Tensor(leaf_->grad), g).impl_ptr();
    } else if (g.impl_ptr().use_count() == 1 && g.storage().use_count() == 1 && g.is_contiguous() && g.offset() == 0) {
      // Nothing else refers to this gradient (the engine's buffer holds the only handle, and no
      // view shares its storage): take it over instead of copying a parameter-sized tensor.
      leaf_->grad = g.detach().impl_ptr();
    } else {
      // Otherwise copy, so that .grad never aliases another gradient or a view.
      leaf_->grad = detail::copy_contiguous(g).impl_ptr();
    }
    return {};
  }
  void release() override {}  // holds no saved tensors; reused by every backward

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

namespace autograd {

// The edge a gradient for `t` must flow along: its producing node, its leaf accumulator, or none.
inline Edge gradient_edge(const Tensor& t) {
  TensorImpl& impl = t.impl();
  if (impl.grad_fn) return Edge{impl.grad_fn, impl.output_nr};
  if (!impl.requires_grad) return Edge{};
  std::shared_ptr<Node> acc = impl.accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    impl.accumulator = acc;
  }
  return Edge{acc, 0};
}

// True when recording is on and any input requires a gradient.
inline bool needs_record(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

// Records `outputs` as produced by an op named `name` from `inputs`; `fn` maps the output gradients to
// input gradients (one per input, undefined allowed). No-op when nothing needs a gradient. The closure
// must hold detached aliases of any output it saves (Tensor::detach), never the outputs themselves.
inline void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor*>& outputs,
                   Node::BackwardFn fn) {
  if (!grad_enabled()) return;
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any) return;
  auto node = std::make_shared<Node>(name, std::move(fn));
  for (const Tensor& t : inputs) {
    node->next_edges().push_back(t.defined() ? gradient_edge(t) : Edge{});
    node->input_shapes.push_back(t.defined() ? t.shape() : Shape{});
  }
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl& o = outputs[i]->impl();
    node->output_shapes.push_back(o.shape);
    node->output_dtypes.push_back(o.dtype);
    node->output_devices.push_back(o.storage->device());
    o.grad_fn = node;
    o.output_nr = static_cast<int>(i);
    o.requires_grad = true;
  }
}
inline void record(const char* name, const std::vector<Tensor>& inputs, Tensor& output, Node::BackwardFn fn) {
  record(name, inputs, std::vector<Tensor*>{&output}, std::move(fn));
}

// Runs backward from `roots` seeded with `grads` (same count). See Tensor::backward.
inline void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  NoGradGuard no_grad;
  std::unordered_map<Node*, int> deps;
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::vector<std::shared_ptr<Node>> stack;
  // Dependency count: how many edges point at each node reachable from the roots.
  std::vector<Node*> visit;
  std::unordered_map<Node*, bool> seen;
  auto push_root = [&](const std::shared_ptr<Node>& n) {
    if (!seen[n.get()]) {
      seen[n.get()] = true;
      visit.push_back(n.get());
    }
  };
  std::vector<std::pair<Edge, Tensor>> seeds;
  for (std::size_t i = 0; i < roots.size(); ++i) {
    Edge e = gradient_edge(roots[i]);
    ARCLIGHT_CHECK(e.node != nullptr, "backward", "tensor ", roots[i].str(),
                   " does not require grad and has no grad_fn; nothing to differentiate");
    seeds.emplace_back(e, grads[i]);
    push_root(e.node);
  }
  while (!visit.empty()) {
    Node* n = visit.back();
    visit.pop_back();
    for (const Edge& e : n->next_edges()) {
      if (!e.node) continue;
      ++deps[e.node.get()];
      if (!seen[e.node.get()]) {
        seen[e.node.get()] = true;
        visit.push_back(e.node.get());
      }
    }
  }
  auto accumulate = [&](const Edge& e, const Tensor& g) {
    auto& buf = buffers[e.node.get()];
    const std::size_t n_out = std::max<std::size_t>(1, e.node->output_shapes.size());
    if (buf.size() < n_out) buf.resize(n_out);
    Tensor& slot = buf[static_cast<std::size_t>(e.input_nr)];
    slot = slot.defined() ? detail::add_same_shape(slot, g) : g;
  };
  std::vector<std::shared_ptr<Node>> ready;
  for (auto& [e, g] : seeds) {
    accumulate(e, g);
    if (deps[e.node.get()] == 0) ready.push_back(e.node);
  }
  // Roots that are also reachable from other roots wait for their dependencies.
  std::unordered_map<Node*, bool> queued;
  for (auto& n : ready) queued[n.get()] = true;
  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.back();
    ready.pop_back();
    // The node's backward and the summing of the gradients it hands on are charged to the node.
    profiler::Scope profile_scope(node->name().c_str(), profiler::Phase::backward);
    std::vector<Tensor> grad_out = std::move(buffers[node.get()]);
    buffers.erase(node.get());
    for (std::size_t i = 0; i < node->output_shapes.size(); ++i) {
      if (grad_out.size() <= i) grad_out.resize(i + 1);
      if (!grad_out[i].defined()) grad_out[i] = zeros(node->output_shapes[i], node->output_dtypes[i], node->output_devices[i]);
    }
    std::vector<Tensor> grad_in = node->apply(grad_out);
    if (!retain_graph) node->release();
    const auto& edges = node->next_edges();
    for (std::size_t i = 0; i < edges.size(); ++i) {
      const Edge& e = edges[i];
      if (!e.node) continue;
      if (i < grad_in.size() && grad_in[i].defined()) {
        ARCLIGHT_CHECK(grad_in[i].shape() == node->input_shapes[i], "backward", "node '", node->name(),
                       "' returned a gradient of shape ", shape_str(grad_in[i].shape()), " for input ", i,
                       " of shape ", shape_str(node->input_shapes[i]));
        accumulate(e, grad_in[i]);
      }
      if (--deps[e.node.get()] == 0 && !queued[e.node.get()]) {
        queued[e.node.get()] = true;
        ready.push_back(e.node);
      }
    }
  }
}

}  // namespace autograd

inline void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  Tensor seed = gradient;
  if (!seed.defined()) {
    ARCLIGHT_CHECK(numel() == 1, "backward", "called without a gradient on ", str(),
                   "; expected a one-element tensor (or pass the gradient explicitly)");
    seed = ones(shape(), dtype(), device());
  } else {
    ARCLIGHT_CHECK(seed.shape() == shape() && seed.dtype() == dtype(), "backward", "gradient ", seed.str(),
                   " does not match the tensor ", str());
  }
  autograd::run_backward({*this}, {seed}, retain_graph);
}

}  // namespace arclight
