// Helpers shared by the conv-block layer tests (tests/layers/): one include for every op and module under
// test, leaves from explicit values, and slow, obvious float64 references (a direct 7-loop convolution,
// batch norm written with the generic reduction ops) that the optimised ops are compared with.
#pragma once

#include <cmath>
#include <vector>

#include "arclight/nn/activation.hpp"
#include "arclight/nn/attention.hpp"
#include "arclight/nn/batch_norm.hpp"
#include "arclight/nn/conv.hpp"
#include "arclight/nn/dropout.hpp"
#include "arclight/nn/pooling.hpp"
#include "arclight/ops/activation.hpp"
#include "arclight/ops/batch_norm.hpp"
#include "arclight/ops/conv2d.hpp"
#include "arclight/ops/dropout.hpp"
#include "arclight/ops/pooling.hpp"
#include "harness.hpp"

namespace arclight::layers_test {

using arclight::Tensor;

// A leaf (requires grad) holding `values` with `shape`.
inline Tensor leaf_from(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f64) {
  Tensor t = from_vector(values, shape, dtype);
  t.set_requires_grad(true);
  return t;
}

// Uniform values in [lo, hi) from a seeded generator, as a plain (non-leaf) tensor.
inline Tensor uniform(const Shape& shape, std::uint64_t seed, double lo = -1.0, double hi = 1.0,
                      DType dtype = DType::f64) {
  Generator gen(seed);
  return rand(shape, dtype, gen, lo, hi);
}

// Direct convolution in double: y[n, co, oh, ow] = b[co] + Σ_{ci in group, i, j} x[n, ci, ih, iw]·w[co, ci', i, j]
// with the pads resolved exactly as kernels::conv2d_shape does (TF-same included). The obvious reference.
inline Tensor conv2d_reference(const Tensor& x, const Tensor& w, const Tensor& b, const ops::Conv2dParams& p) {
  const auto xs = x.shape(), ws = w.shape();
  const kernels::Conv2dShape s = kernels::conv2d_shape(xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], p);
  const std::vector<double> xv = x.to_vector<double>(), wv = w.to_vector<double>();
  const std::vector<double> bv = b.defined() ? b.to_vector<double>() : std::vector<double>(std::size_t(s.c_out), 0.0);
  std::vector<double> y(std::size_t(s.n * s.c_out * s.out_h * s.out_w));
  const std::int64_t cig = s.c_in / s.groups, cog = s.c_out / s.groups;
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t co = 0; co < s.c_out; ++co)
      for (std::int64_t oh = 0; oh < s.out_h; ++oh)
        for (std::int64_t ow = 0; ow < s.out_w; ++ow) {
          double acc = bv[std::size_t(co)];
          const std::int64_t g = co / cog;
          for (std::int64_t c = 0; c < cig; ++c)
            for (std::int64_t i = 0; i < s.kh; ++i)
              for (std::int64_t j = 0; j < s.kw; ++j) {
                const std::int64_t ih = oh * s.stride_h - s.pad_top + i * s.dilation_h;
                const std::int64_t iw = ow * s.stride_w - s.pad_left + j * s.dilation_w;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                const std::int64_t ci = g * cig + c;
                acc += xv[std::size_t(((n * s.c_in + ci) * s.h + ih) * s.w + iw)] *
                       wv[std::size_t(((co * cig + c) * s.kh + i) * s.kw + j)];
              }
          y[std::size_t(((n * s.c_out + co) * s.out_h + oh) * s.out_w + ow)] = acc;
        }
  return from_vector(y, {s.n, s.c_out, s.out_h, s.out_w}, DType::f64);
}

// Batch norm in train mode written with the generic differentiable ops (biased batch variance), for x of rank
// 2..4 with channels on dim 1. The obvious reference, autograd included.
inline Tensor batch_norm_reference(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  std::vector<std::int64_t> dims{0};
  for (std::int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  Shape bshape(std::size_t(x.dim()), 1);
  bshape[1] = x.shape()[1];
  const Tensor mean = ops::mean(x, dims, true);
  const Tensor centred = ops::sub(x, mean);
  const Tensor var = ops::mean(ops::mul(centred, centred), dims, true);
  Tensor y = ops::mul(centred, ops::rsqrt(ops::add(var, eps)));
  if (weight.defined()) y = ops::mul(y, ops::reshape(weight, bshape));
  if (bias.defined()) y = ops::add(y, ops::reshape(bias, bshape));
  return y;
}

}  // namespace arclight::layers_test
