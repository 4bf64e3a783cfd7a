// Joining and splitting: cat and stack copy into a new tensor (differentiable: each input gets its slice
// of the gradient); split and chunk return views (narrow) of the input.
#pragma once

#include <vector>

#include "arclight/ops/view.hpp"

namespace arclight::ops {

// Concatenates along dim. requires: same rank, dtype and sizes except along dim; at least one tensor.
inline Tensor cat(const std::vector<Tensor>& ts, std::int64_t dim = 0) {
  profiler::Scope profile_scope_("cat");
  ARCLIGHT_CHECK(!ts.empty(), "cat", "expected at least one tensor");
  const Tensor& first = ts[0];
  ARCLIGHT_CHECK(first.dim() > 0, "cat", "cannot concatenate 0-d tensors (use stack)");
  const int d = normalize_dim(dim, first.dim(), "cat");
  Shape shape = first.shape();
  shape[d] = 0;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    detail::check_cpu(ts[i], "cat");
    detail::check_same_dtype(first, ts[i], "cat");
    ARCLIGHT_CHECK(ts[i].dim() == first.dim(), "cat", "tensor ", i, " ", ts[i].str(), " has rank ", ts[i].dim(),
                   ", expected ", first.dim());
    for (int k = 0; k < first.dim(); ++k)
      ARCLIGHT_CHECK(k == d || ts[i].shape()[k] == first.shape()[k], "cat", "tensor ", i, " ", ts[i].str(),
                     " differs from ", first.str(), " in dim ", k, " (only dim ", d, " may differ)");
    shape[d] += ts[i].shape()[d];
  }
  Tensor out = empty(shape, first.dtype());
  std::vector<std::int64_t> sizes;
  {
    NoGradGuard ng;
    std::int64_t at = 0;
    for (const Tensor& t : ts) {
      Tensor dst = narrow(out, d, at, t.shape()[d]);
      copy_(dst, t);
      at += t.shape()[d];
      sizes.push_back(t.shape()[d]);
    }
  }
  autograd::record("cat", ts, out, [d, sizes](const std::vector<Tensor>& g) {
    std::vector<Tensor> grads;
    std::int64_t at = 0;
    for (auto s : sizes) {
      grads.push_back(narrow(g[0], d, at, s));
      at += s;
    }
    return grads;
  });
  return out;
}

// Stacks equal-shaped tensors along a new dim.
inline Tensor stack(const std::vector<Tensor>& ts, std::int64_t dim = 0) {
  profiler::Scope profile_scope_("stack");
  ARCLIGHT_CHECK(!ts.empty(), "stack", "expected at least one tensor");
  const int d = normalize_dim(dim, ts[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    ARCLIGHT_CHECK(ts[i].shape() == ts[0].shape(), "stack", "tensor ", i, " ", ts[i].str(), " differs from ", ts[0].str(),
                   "; stack needs equal shapes");
    parts.push_back(unsqueeze(ts[i], d));
  }
  return cat(parts, d);
}

// Views of consecutive pieces of `size` along dim (the last may be smaller).
inline std::vector<Tensor> split(const Tensor& t, std::int64_t size, std::int64_t dim = 0) {
  const int d = normalize_dim(dim, t.dim(), "split");
  ARCLIGHT_CHECK(size > 0, "split", "split size must be positive, got ", size);
  std::vector<Tensor> out;
  const std::int64_t n = t.shape()[d];
  for (std::int64_t at = 0; at < n; at += size) out.push_back(narrow(t, d, at, std::min(size, n - at)));
  if (n == 0) out.push_back(t);
  return out;
}

// Views of pieces with the given sizes along dim. requires: the sizes add up to the dim's size.
inline std::vector<Tensor> split(const Tensor& t, const std::vector<std::int64_t>& sizes, std::int64_t dim = 0) {
  const int d = normalize_dim(dim, t.dim(), "split");
  std::int64_t total = 0;
  for (auto s : sizes) {
    ARCLIGHT_CHECK(s >= 0, "split", "negative split size ", s);
    total += s;
  }
  ARCLIGHT_CHECK(total == t.shape()[d], "split", "sizes add up to ", total, " but dim ", d, " of ", t.str(), " has size ",
                 t.shape()[d]);
  std::vector<Tensor> out;
  std::int64_t at = 0;
  for (auto s : sizes) {
    out.push_back(narrow(t, d, at, s));
    at += s;
  }
  return out;
}

// `chunks` views of (almost) equal size along dim, as PyTorch (size ceil(n / chunks); maybe fewer pieces).
inline std::vector<Tensor> chunk(const Tensor& t, std::int64_t chunks, std::int64_t dim = 0) {
  ARCLIGHT_CHECK(chunks > 0, "chunk", "number of chunks must be positive, got ", chunks);
  const int d = normalize_dim(dim, t.dim(), "chunk");
  const std::int64_t n = t.shape()[d];
  return split(t, std::max<std::int64_t>(1, (n + chunks - 1) / chunks), d);
}

}  // namespace arclight::ops
