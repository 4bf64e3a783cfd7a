// Reductions over any set of dims, with keepdim: sum, mean, var (with correction), amax/amin (gradient
// shared evenly among ties, as PyTorch), max/min along one dim with indices, argmax/argmin and topk (no
// gradient). An empty dim list reduces every dim. Float sums accumulate in double.
#pragma once

#include <algorithm>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "arclight/ops/view.hpp"

namespace arclight::ops {

namespace detail {

template <typename T>
struct SumOp {
  using Acc = kernels::cpu::sum_acc_t<T>;
  double scale = 1.0;  // mean: 1 / count
  Acc init() const { return Acc(0); }
  void step(Acc& a, T x, std::int64_t) const { a += static_cast<Acc>(x); }
  void merge(Acc& a, const Acc& b) const { a += b; }
  T finish(const Acc& a, std::int64_t) const { return static_cast<T>(static_cast<double>(a) * scale); }
};

template <typename T, bool Max>
struct ExtremeOp {
  struct Acc {
    T v;
    std::int64_t i;
  };
  Acc init() const { return {Max ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max(), -1}; }
  void step(Acc& a, T x, std::int64_t i) const {
    // NaN propagates (as PyTorch): the first NaN wins and sticks.
    if (a.i >= 0 && a.v != a.v) return;
    if (a.i < 0 || x != x || (Max ? x > a.v : x < a.v)) a = {x, i};
  }
  void merge(Acc& a, const Acc& b) const {
    if (b.i < 0 || (a.i >= 0 && a.v != a.v)) return;
    if (a.i < 0 || b.v != b.v || (Max ? b.v > a.v : b.v < a.v)) a = b;
  }
};

// Runs a reduction over `dims` of t into a new tensor of the reduced shape.
template <typename Out, typename T, typename Op>
Tensor run_reduce(const Tensor& t, const std::vector<int>& dims, bool keepdim, DType out_dtype, const Op& op) {
  Tensor out = empty(reduced_shape(t.shape(), dims, keepdim), out_dtype);
  kernels::cpu::reduce<T, Out>(t.data_ptr<T>(), reduce_layout(t, dims), out.data_ptr<Out>(), op);
  return out;
}

inline std::int64_t reduced_count(const Tensor& t, const std::vector<int>& dims) {
  std::int64_t n = 1;
  for (int d : dims) n *= t.shape()[d];
  return n;
}

// The same reduction on a CUDA device (float32): scale · op over `dims`, into a new tensor of the reduced shape.
inline Tensor device_reduce(const Tensor& t, const std::vector<int>& dims, bool keepdim, cuda::detail::Reduce op,
                            double scale, const char* name) {
  Tensor out = empty(reduced_shape(t.shape(), dims, keepdim), t.dtype(), t.device());
  std::vector<bool> red(static_cast<std::size_t>(t.dim()), false);
  for (int d : dims) red[static_cast<std::size_t>(d)] = true;
  cuda::detail::reduce(op, t, red, scale, out, name);
  return out;
}

// g (reduced shape, keepdim or not) viewed with size-1 dims where `dims` were reduced.
inline Tensor unsqueeze_reduced(const Tensor& g, const Shape& in_shape, const std::vector<int>& dims, bool keepdim) {
  if (keepdim) return g;
  return reshape(g, reduced_shape(in_shape, dims, true));
}

}  // namespace detail

// Defined in elementwise.hpp (backward formulas here use them).
Tensor sub(const Tensor& a, const Tensor& b);  // elementwise.hpp
Tensor div(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, double s);

// Sum over dims (all when empty). Differentiable.
inline Tensor sum(const Tensor& t, const std::vector<std::int64_t>& dims_in = {}, bool keepdim = false) {
  profiler::Scope profile_scope_("sum");
  const Device dev = detail::op_device("sum", {&t});
  const auto dims = detail::normalize_dims(dims_in, t.dim(), "sum");
  Tensor out = dev.is_cuda() ? detail::device_reduce(t, dims, keepdim, cuda::detail::Reduce::sum, 1.0, "sum")
                             : dispatch_all(t.dtype(), "sum", [&]<typename T>() {
                                 return detail::run_reduce<T, T>(t, dims, keepdim, t.dtype(), detail::SumOp<T>{});
                               });
  const Shape in_shape = t.shape();
  autograd::record("sum", {t}, out, [in_shape, dims, keepdim](const std::vector<Tensor>& g) {
    return std::vector<Tensor>{contiguous(expand(detail::unsqueeze_reduced(g[0], in_shape, dims, keepdim), in_shape))};
  });
  return out;
}

// Mean over dims (all when empty). Differentiable. requires: floating dtype.
inline Tensor mean(const Tensor& t, const std::vector<std::int64_t>& dims_in = {}, bool keepdim = false) {
  profiler::Scope profile_scope_("mean");
  const Device dev = detail::op_device("mean", {&t});
  const auto dims = detail::normalize_dims(dims_in, t.dim(), "mean");
  const std::int64_t n = detail::reduced_count(t, dims);
  Tensor out =
      dev.is_cuda()
          ? detail::device_reduce(t, dims, keepdim, cuda::detail::Reduce::sum, 1.0 / static_cast<double>(n), "mean")
          : dispatch_floating(t.dtype(), "mean", [&]<typename T>() {
              return detail::run_reduce<T, T>(t, dims, keepdim, t.dtype(), detail::SumOp<T>{1.0 / static_cast<double>(n)});
            });
  const Shape in_shape = t.shape();
  autograd::record("mean", {t}, out, [in_shape, dims, keepdim, n](const std::vector<Tensor>& g) {
    Tensor ge = expand(detail::unsqueeze_reduced(g[0], in_shape, dims, keepdim), in_shape);
    if (ge.device().is_cuda()) return std::vector<Tensor>{mul(ge, 1.0 / static_cast<double>(n))};
    Tensor r = empty(in_shape, g[0].dtype());
    dispatch_floating(r.dtype(), "mean backward", [&]<typename T>() {
      const T inv = static_cast<T>(1.0 / static_cast<double>(n));
      kernels::cpu::strided_map<T, T>(detail::broadcast_operands<2>({&r, &ge}), [inv](T x) { return x * inv; });
    });
    return std::vector<Tensor>{r};
  });
  return out;
}


// Variance over dims with Bessel-style correction (1 = unbiased, as PyTorch's default). Differentiable.
inline Tensor var(const Tensor& t, const std::vector<std::int64_t>& dims_in = {}, std::int64_t correction = 1,
                  bool keepdim = false) {
  profiler::Scope profile_scope_("var");
  detail::check_cpu(t, "var");
  const auto dims = detail::normalize_dims(dims_in, t.dim(), "var");
  const std::int64_t n = detail::reduced_count(t, dims);
  ARCLIGHT_CHECK(correction >= 0, "var", "correction must be ≥ 0, got ", correction);
  const double denom = static_cast<double>(std::max<std::int64_t>(n - correction, 0));
  std::vector<std::int64_t> d64(dims.begin(), dims.end());
  // Two passes (mean, then centred squares) for accuracy; built from differentiable ops.
  Tensor centred = sub(t, mean(t, d64, true));
  Tensor sq = mul(centred, centred);
  return mul(sum(sq, d64, keepdim), denom > 0 ? 1.0 / denom : std::numeric_limits<double>::quiet_NaN());
}

namespace detail {
template <bool Max>
Tensor extreme_all(const Tensor& t, const std::vector<std::int64_t>& dims_in, bool keepdim, const char* name) {
  const Device dev = op_device(name, {&t});
  const auto dims = normalize_dims(dims_in, t.dim(), name);
  ARCLIGHT_CHECK(reduced_count(t, dims) > 0, name, "cannot reduce an empty tensor ", t.str());
  Tensor out = dev.is_cuda() ? device_reduce(t, dims, keepdim, Max ? cuda::detail::Reduce::max : cuda::detail::Reduce::min,
                                             1.0, name)
                             : dispatch_all(t.dtype(), name, [&]<typename T>() {
                                 struct Op : ExtremeOp<T, Max> {
                                   T finish(const typename ExtremeOp<T, Max>::Acc& a, std::int64_t) const { return a.v; }
                                 };
                                 return run_reduce<T, T>(t, dims, keepdim, t.dtype(), Op{});
                               });
  const Shape in_shape = t.shape();
  const Tensor x = t.detach(), y = out.detach();
  autograd::record(name, {t}, out, [x, y, in_shape, dims, keepdim](const std::vector<Tensor>& g) {
    // d/dx: g / (number of ties) at every position equal to the extreme value.
    Tensor ye = expand(unsqueeze_reduced(y, in_shape, dims, keepdim), in_shape);
    Tensor ge = expand(unsqueeze_reduced(g[0], in_shape, dims, keepdim), in_shape);
    if (x.device().is_cuda()) {  // the same formula from device ops
      const Tensor one = ones({}, x.dtype(), x.device()), zero = zeros({}, x.dtype(), x.device());
      Tensor m = where(eq(x, ye), one, zero);
      std::vector<std::int64_t> d64(dims.begin(), dims.end());
      return std::vector<Tensor>{div(mul(m, ge), sum(m, d64, true))};
    }
    Tensor mask = empty(in_shape, x.dtype());
    dispatch_floating(x.dtype(), "amax backward", [&]<typename T>() {
      kernels::cpu::strided_map<T, T, T>(broadcast_operands<3>({&mask, &x, &ye}),
                                         [](T a, T b) { return a == b ? T(1) : T(0); });
    });
    std::vector<std::int64_t> d64(dims.begin(), dims.end());
    Tensor count = expand(sum(mask, d64, true), in_shape);
    Tensor r = empty(in_shape, x.dtype());
    dispatch_floating(x.dtype(), "amax backward", [&]<typename T>() {
      kernels::cpu::strided_map<T, T, T, T>(broadcast_operands<4>({&r, &mask, &ge, &count}),
                                            [](T m, T gg, T c) { return m * gg / c; });
    });
    return std::vector<Tensor>{r};
  });
  return out;
}

template <bool Max>
std::pair<Tensor, Tensor> extreme_dim(const Tensor& t, std::int64_t dim, bool keepdim, const char* name) {
  check_cpu(t, name);
  const int d = normalize_dim(dim, t.dim(), name);
  const std::vector<int> dims = t.dim() ? std::vector<int>{d} : std::vector<int>{};
  ARCLIGHT_CHECK(reduced_count(t, dims) > 0, name, "cannot reduce an empty dim of ", t.str());
  const Shape out_shape = reduced_shape(t.shape(), dims, keepdim);
  Tensor values = empty(out_shape, t.dtype()), indices = empty(out_shape, DType::i64);
  dispatch_all(t.dtype(), name, [&]<typename T>() {
    struct Op : ExtremeOp<T, Max> {
      typename ExtremeOp<T, Max>::Acc finish(const typename ExtremeOp<T, Max>::Acc& a, std::int64_t) const { return a; }
    };
    std::vector<typename ExtremeOp<T, Max>::Acc> acc(static_cast<std::size_t>(values.numel()));
    kernels::cpu::reduce<T>(t.data_ptr<T>(), reduce_layout(t, dims), acc.data(), Op{});
    T* v = values.data_ptr<T>();
    std::int64_t* ix = indices.data_ptr<std::int64_t>();
    for (std::size_t i = 0; i < acc.size(); ++i) {
      v[i] = acc[i].v;
      ix[i] = acc[i].i;
    }
  });
  return {values, indices};
}
}  // namespace detail

// Largest / smallest value over dims (all when empty). Differentiable (ties share the gradient).
inline Tensor amax(const Tensor& t, const std::vector<std::int64_t>& dims = {}, bool keepdim = false) {
  return detail::extreme_all<true>(t, dims, keepdim, "amax");
}
inline Tensor amin(const Tensor& t, const std::vector<std::int64_t>& dims = {}, bool keepdim = false) {
  return detail::extreme_all<false>(t, dims, keepdim, "amin");
}
inline Tensor max(const Tensor& t) { return amax(t); }
inline Tensor min(const Tensor& t) { return amin(t); }

Tensor gather(const Tensor& t, std::int64_t dim, const Tensor& index);  // index.hpp

// (values, indices) of the max / min along dim; the first occurrence wins ties. Values are differentiable
// (the gradient goes to the returned index).
inline std::pair<Tensor, Tensor> max(const Tensor& t, std::int64_t dim, bool keepdim = false) {
  auto [v, i] = detail::extreme_dim<true>(t, dim, keepdim, "max");
  if (autograd::needs_record({&t})) v = gather(t, dim, keepdim ? i : unsqueeze(i, dim)), v = keepdim ? v : squeeze(v, dim);
  return {v, i};
}
inline std::pair<Tensor, Tensor> min(const Tensor& t, std::int64_t dim, bool keepdim = false) {
  auto [v, i] = detail::extreme_dim<false>(t, dim, keepdim, "min");
  if (autograd::needs_record({&t})) v = gather(t, dim, keepdim ? i : unsqueeze(i, dim)), v = keepdim ? v : squeeze(v, dim);
  return {v, i};
}
// Index of the max / min along dim (i64, no gradient).
inline Tensor argmax(const Tensor& t, std::int64_t dim, bool keepdim = false) {
  return detail::extreme_dim<true>(t, dim, keepdim, "argmax").second;
}
inline Tensor argmin(const Tensor& t, std::int64_t dim, bool keepdim = false) {
  return detail::extreme_dim<false>(t, dim, keepdim, "argmin").second;
}

// The k largest (or smallest) values along dim and their indices, sorted best first (ties: lower index
// first). No gradient. requires: 0 ≤ k ≤ size(dim).
inline std::pair<Tensor, Tensor> topk(const Tensor& t_in, std::int64_t k, std::int64_t dim = -1, bool largest = true) {
  profiler::Scope profile_scope_("topk");
  detail::check_cpu(t_in, "topk");
  const int d = normalize_dim(dim, t_in.dim(), "topk");
  const std::int64_t n = t_in.dim() ? t_in.shape()[d] : 1;
  ARCLIGHT_CHECK(k >= 0 && k <= n, "topk", "k = ", k, " is out of range for dim ", d, " of size ", n, " in ", t_in.str());
  NoGradGuard ng;
  // Move dim last and make rows contiguous.
  Tensor t = t_in.dim() ? contiguous(transpose(t_in, d, -1)) : reshape(t_in, {1});
  Shape out_shape = t.shape();
  out_shape.back() = k;
  Tensor values = empty(out_shape, t.dtype()), indices = empty(out_shape, DType::i64);
  const std::int64_t rows = n ? t.numel() / n : 0;
  dispatch_all(t.dtype(), "topk", [&]<typename T>() {
    const T* src = t.data_ptr<T>();
    T* v = values.data_ptr<T>();
    std::int64_t* ix = indices.data_ptr<std::int64_t>();
    parallel_for(0, rows, 16, [&](std::int64_t b, std::int64_t e) {
      std::vector<std::int64_t> order(static_cast<std::size_t>(n));
      for (std::int64_t r = b; r < e; ++r) {
        const T* row = src + r * n;
        std::iota(order.begin(), order.end(), 0);
        auto better = [&](std::int64_t a, std::int64_t c) {
          const bool an = row[a] != row[a], cn = row[c] != row[c];  // NaN counts as largest
          if (an || cn) return largest ? (an && !cn) || (an && cn && a < c) : (!an && cn) || (an && cn && a < c);
          if (row[a] != row[c]) return largest ? row[a] > row[c] : row[a] < row[c];
          return a < c;
        };
        std::partial_sort(order.begin(), order.begin() + k, order.end(), better);
        for (std::int64_t j = 0; j < k; ++j) {
          v[r * k + j] = row[order[static_cast<std::size_t>(j)]];
          ix[r * k + j] = order[static_cast<std::size_t>(j)];
        }
      }
    });
  });
  if (t_in.dim() == 0) return {reshape(values, {}), reshape(indices, {})};
  return {contiguous(transpose(values, d, -1)), contiguous(transpose(indices, d, -1))};
}

// Sums g over the dims that broadcasting added or stretched, giving a tensor of `shape`. Differentiable.
inline Tensor sum_to(const Tensor& g, const Shape& shape) {
  profiler::Scope profile_scope_("sum_to");
  if (g.shape() == shape) return g;
  ARCLIGHT_CHECK(g.dim() >= static_cast<std::int64_t>(shape.size()), "sum_to", "cannot reduce ", g.str(), " to ",
                 shape_str(shape));
  const std::size_t lead = static_cast<std::size_t>(g.dim()) - shape.size();
  std::vector<std::int64_t> dims;
  for (std::size_t d = 0; d < static_cast<std::size_t>(g.dim()); ++d) {
    if (d < lead) dims.push_back(static_cast<std::int64_t>(d));
    else if (shape[d - lead] == 1 && g.shape()[d] != 1) dims.push_back(static_cast<std::int64_t>(d));
    else
      ARCLIGHT_CHECK(shape[d - lead] == g.shape()[d], "sum_to", "cannot reduce ", g.str(), " to ", shape_str(shape));
  }
  Tensor s = dims.empty() ? g : sum(g, dims, true);
  return reshape(s, shape);
}

}  // namespace arclight::ops

#include "arclight/ops/elementwise.hpp"
#include "arclight/ops/index.hpp"
