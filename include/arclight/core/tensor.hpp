// Tensor: a cheap, shared handle to (storage, shape, strides, offset, dtype, device) plus the autograd
// state of that value. Copying a Tensor copies the handle, not the data; views (see ops/view.hpp) make a
// new TensorImpl over the same Storage. Tensors are NCHW-contiguous by default.
//
// This header holds the data structure, element access, factories (empty/zeros/ones/full/arange/
// from_vector/rand/randn/randint) and printing. Differentiable operations are free functions in
// arclight::ops (include/arclight/ops/); the backward engine is autograd/engine.hpp, included at the end.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <iomanip>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "arclight/autograd/grad_mode.hpp"
#include "arclight/core/allocator.hpp"
#include "arclight/core/device.hpp"
#include "arclight/core/dtype.hpp"
#include "arclight/core/error.hpp"
#include "arclight/core/parallel.hpp"
#include "arclight/core/rng.hpp"
#include "arclight/core/shape.hpp"
#include "arclight/cuda/allocator.hpp"  // device storage; compiles (and refuses CUDA devices) without the backend

namespace arclight {

class Node;
class Tensor;

// A block of memory owned by one allocator (the CPU caching allocator, or the caching device allocator of
// cuda/allocator.hpp for Device::cuda(i), which throws "Storage: CUDA device requested but <reason>" where no
// GPU can be used). Storage is shared by every view of it.
class Storage {
 public:
  Storage(std::size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
    data_ = device.is_cuda() ? cuda::detail::storage_allocate(nbytes, device.index, "Storage")
                             : host_allocator().allocate(nbytes);
  }
  ~Storage() {
    if (device_.is_cuda()) {
      cuda::detail::storage_free(data_, nbytes_, device_.index);
    } else {
      host_allocator().deallocate(data_, nbytes_);
    }
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Device device_;
};

// The state behind a Tensor handle.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;
  std::int64_t offset = 0;  // in elements
  DType dtype = DType::f32;

  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;    // set on outputs of recorded ops (non-leaves)
  int output_nr = 0;                // which output of grad_fn this is
  std::weak_ptr<Node> accumulator;  // leaves: the node that accumulates into .grad (created lazily)
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  std::int64_t dim() const { return static_cast<std::int64_t>(impl().shape.size()); }
  std::int64_t size(std::int64_t d) const { return impl().shape[normalize_dim(d, dim(), "Tensor::size")]; }
  std::int64_t stride(std::int64_t d) const { return impl().strides[normalize_dim(d, dim(), "Tensor::stride")]; }
  std::int64_t offset() const { return impl().offset; }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto s : impl().shape) n *= s;
    return n;
  }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  std::size_t element_size() const { return dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  bool is_contiguous() const {
    if (numel() == 0) return true;  // no element is addressed: any strides describe the same (empty) layout
    std::int64_t expected = 1;
    for (std::size_t i = impl().shape.size(); i-- > 0;) {
      if (impl().shape[i] == 1) continue;
      if (impl().strides[i] != expected) return false;
      expected *= impl().shape[i];
    }
    return true;
  }
  // True when both handles refer to the same TensorImpl.
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }
  std::string str() const;  // "Tensor(f32, [2, 3])"

  // ---- data access (CPU) ----
  // Pointer to the first element (offset applied). requires: dtype matches T.
  template <typename T>
  T* data_ptr() const {
    ARCLIGHT_CHECK(dtype_v<std::remove_const_t<T>> == dtype(), "Tensor::data_ptr", "requested ",
                   dtype_name(dtype_v<std::remove_const_t<T>>), " but the tensor is ", dtype_name(dtype()));
    return static_cast<T*>(impl().storage->data()) + impl().offset;
  }
  void* raw_data() const {
    return static_cast<char*>(impl().storage->data()) + impl().offset * static_cast<std::int64_t>(element_size());
  }
  // The elements in logical (row-major) order, converted to T.
  template <typename T>
  std::vector<T> to_vector() const;
  // This tensor on `device`: *this itself when it is already there, else a contiguous copy (same shape and dtype,
  // the bytes of every element in logical order; views and non-contiguous sources are gathered first). Blocking:
  // the copy is complete on return. Not recorded by autograd: the copy is a leaf that does not require grad.
  // Throws "Tensor::to: CUDA device requested but <reason>" in a build without CUDA or without a usable GPU.
  Tensor to(Device device) const;
  // The value of a one-element tensor as double (from any device). requires: numel() == 1.
  double item() const;
  template <typename T>
  T item() const {
    return static_cast<T>(item());
  }

  // ---- autograd ----
  bool requires_grad() const { return impl().requires_grad; }
  // Marks a leaf as needing gradients. requires: floating dtype, and a leaf (no grad_fn). Returns *this.
  Tensor& set_requires_grad(bool on = true) {
    ARCLIGHT_CHECK(!on || is_floating(dtype()), "Tensor::set_requires_grad",
                   "only floating tensors can require gradients, got ", dtype_name(dtype()));
    ARCLIGHT_CHECK(impl().grad_fn == nullptr, "Tensor::set_requires_grad",
                   "can only be set on leaf tensors (this one was produced by an op; use detach())");
    impl().requires_grad = on;
    return *this;
  }
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  // The accumulated gradient (undefined Tensor when none was computed yet).
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  void zero_grad() { impl().grad.reset(); }
  // A new handle to the same data that is not part of any graph.
  Tensor detach() const {
    auto out = std::make_shared<TensorImpl>();
    out->storage = impl().storage;
    out->shape = impl().shape;
    out->strides = impl().strides;
    out->offset = impl().offset;
    out->dtype = impl().dtype;
    return Tensor(std::move(out));
  }
  // Runs the backward pass from this tensor (defined in autograd/engine.hpp). Without `gradient`, requires a
  // one-element tensor and seeds with 1. Accumulates into .grad of the leaves that require grad. The graph is
  // released afterwards unless retain_graph; a second backward through a released graph throws.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;

  TensorImpl& impl() const {
    ARCLIGHT_CHECK(impl_ != nullptr, "Tensor", "operation on an undefined (default-constructed) tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

}  // namespace arclight

#include "arclight/cuda/tensor_ops.hpp"  // the device side of fill / copy / the ops (needs the complete Tensor)

namespace arclight {

// ---- factories -----------------------------------------------------------------------------------

// Uninitialised contiguous tensor. The contents are whatever the allocator hands back.
inline Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
  const std::int64_t n = shape_numel(shape, "empty");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<std::size_t>(n) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

inline Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }

namespace detail {
// Moves t's data (and its gradient, when it has one) to `device` IN PLACE: every handle to t's TensorImpl sees the
// new (contiguous) storage; other views of the old storage keep the old data. For Module::to.
inline void relocate_(const Tensor& t, Device device) {
  if (t.device() == device) return;
  const Tensor moved = t.to(device);
  TensorImpl& impl = t.impl();
  impl.storage = moved.storage();
  impl.strides = moved.strides();
  impl.offset = 0;
  if (impl.grad) impl.grad = Tensor(impl.grad).to(device).impl_ptr();
}
}  // namespace detail

namespace detail {
template <typename T>
void fill_contiguous(T* p, std::int64_t n, T v) {
  parallel_for(0, n, 1 << 16, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) p[i] = v;
  });
}
}  // namespace detail

// Fills a contiguous tensor in place with v (converted to its dtype), on its device. Returns t.
inline Tensor& fill_(Tensor& t, double v) {
  ARCLIGHT_CHECK(t.is_contiguous(), "fill_", "expected a contiguous tensor, got strides ", shape_str(t.strides()));
  if (t.device().is_cuda()) {
    cuda::detail::fill(t, v);
    return t;
  }
  dispatch_all(t.dtype(), "fill_", [&]<typename T>() { detail::fill_contiguous<T>(t.data_ptr<T>(), t.numel(), static_cast<T>(v)); });
  return t;
}

inline Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu()) {
  Tensor t = empty(shape, dtype, device);
  fill_(t, value);
  return t;
}
inline Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
  return full(shape, 0.0, dtype, device);
}
inline Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu()) {
  return full(shape, 1.0, dtype, device);
}
// Same shape, dtype and device as t.
inline Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
inline Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }
inline Tensor full_like(const Tensor& t, double v) { return full(t.shape(), v, t.dtype(), t.device()); }
// A 0-d tensor holding v (on `device`: a device-side scalar operand needs no host synchronisation).
inline Tensor scalar_tensor(double v, DType dtype = DType::f32, Device device = Device::cpu()) {
  return full({}, v, dtype, device);
}

// [start, end) in steps of step, as PyTorch's arange (size ceil((end - start) / step)).
inline Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::i64) {
  ARCLIGHT_CHECK(step != 0.0, "arange", "step must be non-zero");
  const double count = std::ceil((end - start) / step);
  ARCLIGHT_CHECK(count >= 0 && count < 9.0e18, "arange", "range [", start, ", ", end, ") with step ", step,
                 " gives an invalid element count ", count);
  Tensor t = empty({static_cast<std::int64_t>(count)}, dtype);
  dispatch_all(dtype, "arange", [&]<typename T>() {
    T* p = t.data_ptr<T>();
    for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(start + static_cast<double>(i) * step);
  });
  return t;
}
inline Tensor arange(std::int64_t end, DType dtype = DType::i64) { return arange(0.0, static_cast<double>(end), 1.0, dtype); }

// Copies `values` into a new tensor of `shape` (and dtype of T unless given). requires: sizes agree.
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, DType dtype = dtype_v<T>) {
  const std::int64_t n = shape_numel(shape, "from_vector");
  ARCLIGHT_CHECK(n == static_cast<std::int64_t>(values.size()), "from_vector", "shape ", shape_str(shape), " holds ", n,
                 " elements but ", values.size(), " values were given");
  Tensor t = empty(shape, dtype);
  dispatch_all(dtype, "from_vector", [&]<typename U>() {
    U* p = t.data_ptr<U>();
    for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<U>(values[static_cast<std::size_t>(i)]);
  });
  return t;
}
// 1-D tensor from a braced list: tensor({1, 2, 3}).
inline Tensor tensor(std::initializer_list<double> values, DType dtype = DType::f32) {
  return from_vector(std::vector<double>(values), {static_cast<std::int64_t>(values.size())}, dtype);
}

namespace detail {
// Element i of a random tensor takes word i % 4 of Philox block first_block + i / 4 (so the values do
// not depend on how the loop is split across threads).
template <typename T, typename F>
void fill_random(Tensor& t, Generator& gen, std::int64_t words_per_elem, F&& make) {
  const std::int64_t n = t.numel();
  const std::uint64_t blocks = static_cast<std::uint64_t>((n * words_per_elem + 3) / 4);
  const std::uint64_t first = gen.reserve(blocks);
  const std::uint64_t seed = gen.seed();
  T* p = t.data_ptr<T>();
  parallel_for(0, n, 1 << 14, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      std::uint32_t w[2];
      for (std::int64_t k = 0; k < words_per_elem; ++k) {
        const std::int64_t word = i * words_per_elem + k;
        w[k] = kernels::philox_block(seed, 0, first + static_cast<std::uint64_t>(word / 4)).v[word % 4];
      }
      p[i] = make(w);
    }
  });
}
}  // namespace detail

// Uniform in [lo, hi).
inline Tensor rand(const Shape& shape, DType dtype = DType::f32, Generator& gen = default_generator(), double lo = 0.0,
                   double hi = 1.0) {
  Tensor t = empty(shape, dtype);
  dispatch_floating(dtype, "rand", [&]<typename T>() {
    detail::fill_random<T>(t, gen, 2, [&](const std::uint32_t* w) {
      return static_cast<T>(lo + (hi - lo) * kernels::philox_uniform_f64(w[0], w[1]));
    });
  });
  return t;
}

// Standard normal (Box–Muller on two 53-bit uniforms), scaled by stddev and shifted by mean.
inline Tensor randn(const Shape& shape, DType dtype = DType::f32, Generator& gen = default_generator(), double mean = 0.0,
                    double stddev = 1.0) {
  Tensor t = empty(shape, dtype);
  dispatch_floating(dtype, "randn", [&]<typename T>() {
    // 4 words per element: two 53-bit uniforms.
    const std::int64_t n = t.numel();
    const std::uint64_t first = gen.reserve(static_cast<std::uint64_t>(n));
    const std::uint64_t seed = gen.seed();
    T* p = t.data_ptr<T>();
    parallel_for(0, n, 1 << 13, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) {
        const auto w = kernels::philox_block(seed, 0, first + static_cast<std::uint64_t>(i));
        double u1 = kernels::philox_uniform_f64(w.v[0], w.v[1]);
        const double u2 = kernels::philox_uniform_f64(w.v[2], w.v[3]);
        if (u1 < 1e-300) u1 = 1e-300;
        p[i] = static_cast<T>(mean + stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
      }
    });
  });
  return t;
}

// Uniform integers in [lo, hi) (hi exclusive, as PyTorch).
inline Tensor randint(std::int64_t lo, std::int64_t hi, const Shape& shape, DType dtype = DType::i64,
                      Generator& gen = default_generator()) {
  ARCLIGHT_CHECK(hi > lo, "randint", "empty range [", lo, ", ", hi, ")");
  Tensor t = empty(shape, dtype);
  const auto range = static_cast<std::uint64_t>(hi - lo);
  dispatch_all(dtype, "randint", [&]<typename T>() {
    detail::fill_random<T>(t, gen, 2, [&](const std::uint32_t* w) {
      const std::uint64_t bits = (static_cast<std::uint64_t>(w[0]) << 32) | w[1];
      const auto m = static_cast<unsigned __int128>(bits) * range;
      return static_cast<T>(lo + static_cast<std::int64_t>(static_cast<std::uint64_t>(m >> 64)));
    });
  });
  return t;
}

// ---- element access and printing -----------------------------------------------------------------

namespace detail {
// Calls f(flat_offset_in_elements) for every element in row-major logical order.
template <typename F>
void for_each_offset(const Tensor& t, F&& f) {
  const auto& shape = t.shape();
  const auto& strides = t.strides();
  const std::int64_t n = t.numel();
  if (n == 0) return;
  std::vector<std::int64_t> idx(shape.size(), 0);
  std::int64_t off = t.offset();
  for (std::int64_t i = 0; i < n; ++i) {
    f(off);
    for (std::size_t d = shape.size(); d-- > 0;) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}
}  // namespace detail

template <typename T>
std::vector<T> Tensor::to_vector() const {
  ARCLIGHT_CHECK(device().is_cpu(), "Tensor::to_vector", "tensor is on ", device().str(), "; copy it to the CPU first");
  std::vector<T> out;
  out.reserve(static_cast<std::size_t>(numel()));
  dispatch_all(dtype(), "Tensor::to_vector", [&]<typename U>() {
    const U* base = static_cast<const U*>(storage()->data());
    detail::for_each_offset(*this, [&](std::int64_t off) { out.push_back(static_cast<T>(base[off])); });
  });
  return out;
}

inline Tensor Tensor::to(Device target) const {
  const char* op = "Tensor::to";
  if (target == device()) return *this;
  if (target.is_cuda() || device().is_cuda()) {
    ARCLIGHT_CHECK(cuda::available(), op, "CUDA device requested but ", cuda::availability().reason);
    if (target.is_cuda())
      ARCLIGHT_CHECK(target.index >= 0 && target.index < cuda::availability().device_count, op, "CUDA device ",
                     target.str(), " requested but ", cuda::availability().device_count, " CUDA device(s) exist");
  }
  Tensor out = empty(shape(), dtype(), target);
  const std::size_t es = element_size();
  const std::size_t nbytes = static_cast<std::size_t>(numel()) * es;
  if (nbytes == 0) return out;
  if (is_contiguous()) {
    cuda::detail::copy_bytes(out.raw_data(), target, raw_data(), device(), nbytes, op);
    return out;
  }
  // Non-contiguous: bring the storage span the view addresses to the host (one copy when it is on a device),
  // gather its elements in logical order, then copy the packed bytes to the target.
  std::int64_t lo = offset(), hi = offset();
  for (std::size_t d = 0; d < shape().size(); ++d) {
    const std::int64_t reach = (shape()[d] - 1) * strides()[d];
    (reach < 0 ? lo : hi) += reach;
  }
  // Element `off` of the storage is at origin + (off - shift) * es.
  const unsigned char* origin = static_cast<const unsigned char*>(storage()->data());
  std::int64_t shift = 0;
  std::vector<unsigned char> span;
  if (device().is_cuda()) {
    span.resize(static_cast<std::size_t>(hi - lo + 1) * es);
    cuda::detail::copy_bytes(span.data(), Device::cpu(), origin + lo * static_cast<std::int64_t>(es), device(),
                             span.size(), op);
    origin = span.data();
    shift = lo;
  }
  std::vector<unsigned char> packed(target.is_cpu() ? 0 : nbytes);
  unsigned char* dst = target.is_cpu() ? static_cast<unsigned char*>(out.raw_data()) : packed.data();
  std::size_t i = 0;
  detail::for_each_offset(*this, [&](std::int64_t off) {
    std::memcpy(dst + i * es, origin + (off - shift) * static_cast<std::int64_t>(es), es);
    ++i;
  });
  if (target.is_cuda()) cuda::detail::copy_bytes(out.raw_data(), target, packed.data(), Device::cpu(), nbytes, op);
  return out;
}

inline double Tensor::item() const {
  ARCLIGHT_CHECK(numel() == 1, "Tensor::item", "expected a tensor with one element, got shape ", shape_str(shape()));
  // On a device: one element copied back (waits for the work queued before it).
  return (device().is_cpu() ? *this : to(Device::cpu())).to_vector<double>()[0];
}

inline std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return str_cat("Tensor(", dtype_name(dtype()), ", ", shape_str(shape()), device().is_cpu() ? "" : ", " + device().str(),
                 requires_grad() ? ", requires_grad" : "", ")");
}

// Prints header line and values, nested brackets per dim; long dims show the first and last 3 entries.
inline std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "Tensor(undefined)";
  os << t.str() << "\n";
  const std::vector<double> v = t.to_vector<double>();
  const auto& shape = t.shape();
  const bool integral = !is_floating(t.dtype());
  std::ostringstream body;
  body << std::setprecision(6);
  // rec(dim, flat_start, stride_in_flat)
  std::vector<std::int64_t> flat_strides = contiguous_strides(shape);
  auto print_value = [&](double x) {
    if (integral)
      body << static_cast<long long>(x);
    else
      body << x;
  };
  std::function<void(std::size_t, std::int64_t)> rec = [&](std::size_t d, std::int64_t start) {
    if (d == shape.size()) {
      print_value(v[static_cast<std::size_t>(start)]);
      return;
    }
    body << "[";
    const std::int64_t n = shape[d];
    for (std::int64_t i = 0; i < n; ++i) {
      if (n > 6 && i == 3) {
        body << "...";
        i = n - 4;
        if (d + 1 < shape.size()) body << ",\n" << std::string(d + 1, ' ');
        else body << ", ";
        continue;
      }
      rec(d + 1, start + i * flat_strides[d]);
      if (i + 1 < n) {
        if (d + 1 < shape.size()) body << ",\n" << std::string(d + 1, ' ');
        else body << ", ";
      }
    }
    body << "]";
  };
  rec(0, 0);
  return os << body.str();
}

}  // namespace arclight

#include "arclight/autograd/engine.hpp"
