// Matrix products through BLAS: mm (2-D), bmm (3-D, batch strides may be 0 for a broadcast operand),
// matmul (NumPy/PyTorch semantics for 1-D … N-D with broadcast batch dims) and linear (x·Wᵀ + b).
// Transposed views are handed to BLAS as transpose flags with their leading dimension; only operands
// whose last two dims are not unit-strided in either order are copied first.
#pragma once

#include <climits>
#include <optional>

#include "arclight/cuda/layer_ops.hpp"
#include "arclight/ops/elementwise.hpp"
#include "kernels/cpu/gemm.hpp"

namespace arclight::ops {

namespace detail {

// How a 2-D (rows × cols) matrix with strides (s0, s1) is passed to BLAS; nullopt if it must be copied.
struct BlasOperand {
  bool trans;
  std::int64_t ld;
};
inline std::optional<BlasOperand> blas_operand(std::int64_t rows, std::int64_t cols, std::int64_t s0, std::int64_t s1) {
  if ((s1 == 1 || cols == 1) && s0 >= std::max<std::int64_t>(1, cols)) return BlasOperand{false, s0};
  if ((s0 == 1 || rows == 1) && s1 >= std::max<std::int64_t>(1, rows)) return BlasOperand{true, s1};
  return std::nullopt;
}

// Batched product of a [B, m, k] and b [B, k, n] (either may have batch stride 0) into a new [B, m, n].
inline Tensor bmm_kernel(Tensor a, Tensor b, const char* name) {
  const std::int64_t B = a.shape()[0], m = a.shape()[1], k = a.shape()[2], n = b.shape()[2];
  ARCLIGHT_CHECK(m < INT_MAX && n < INT_MAX && k < INT_MAX, name, "matrix sizes exceed BLAS's int range: ", a.str(), " × ",
                 b.str());
  auto oa = blas_operand(m, k, a.strides()[1], a.strides()[2]);
  if (!oa) {
    a = arclight::detail::copy_contiguous(a);
    oa = blas_operand(m, k, a.strides()[1], a.strides()[2]);
  }
  auto ob = blas_operand(k, n, b.strides()[1], b.strides()[2]);
  if (!ob) {
    b = arclight::detail::copy_contiguous(b);
    ob = blas_operand(k, n, b.strides()[1], b.strides()[2]);
  }
  if (a.device().is_cuda()) {
    // cuBLAS, one strided-batched call; under cuda::AutocastScope(bf16 or f16) on 16-bit copies of the operands
    // with float32 accumulation and output.
    if (const DType amp = cuda::autocast_dtype(); amp != DType::f32) {
      a = cuda::detail::convert(a, amp, name);
      b = cuda::detail::convert(b, amp, name);
      oa = blas_operand(m, k, a.strides()[1], a.strides()[2]);
      ob = blas_operand(k, n, b.strides()[1], b.strides()[2]);
    }
    Tensor out = empty({B, m, n}, DType::f32, a.device());
    cuda::detail::gemm_batched(oa->trans, ob->trans, m, n, k, a, oa->ld, B > 1 ? a.strides()[0] : 0, b, ob->ld,
                               B > 1 ? b.strides()[0] : 0, out, B);
    return out;
  }
  Tensor out = empty({B, m, n}, a.dtype());
  kernels::cpu::GemmShape s{m, n, k, oa->trans, ob->trans, oa->ld, ob->ld, n};
  dispatch_floating(a.dtype(), name, [&]<typename T>() {
    const T* pa = a.data_ptr<T>();
    const T* pb = b.data_ptr<T>();
    T* pc = out.data_ptr<T>();
    for (std::int64_t i = 0; i < B; ++i)
      kernels::cpu::gemm<T>(s, T(1), pa + i * a.strides()[0], pb + i * b.strides()[0], T(0), pc + i * m * n);
  });
  return out;
}

}  // namespace detail

// a [m, k] · b [k, n] → [m, n]. Differentiable.
inline Tensor mm(const Tensor& a, const Tensor& b) {
  profiler::Scope profile_scope_("mm");
  if (detail::op_device("mm", {&a, &b}).is_cuda()) {
    cuda::detail::check_f32(a, "mm", "operand");
    cuda::detail::check_f32(b, "mm", "operand");
  }
  detail::check_same_dtype(a, b, "mm");
  ARCLIGHT_CHECK(a.dim() == 2 && b.dim() == 2, "mm", "expected two 2-D tensors, got ", a.str(), " and ", b.str());
  ARCLIGHT_CHECK(a.shape()[1] == b.shape()[0], "mm", "inner dimensions differ: ", a.str(), " · ", b.str(),
                 " (expected a.shape[1] == b.shape[0])");
  Tensor a3 = detail::make_view(a, {1, a.shape()[0], a.shape()[1]}, {0, a.strides()[0], a.strides()[1]}, a.offset());
  Tensor b3 = detail::make_view(b, {1, b.shape()[0], b.shape()[1]}, {0, b.strides()[0], b.strides()[1]}, b.offset());
  Tensor out3 = detail::bmm_kernel(a3, b3, "mm");
  Tensor out = detail::make_view(out3, {a.shape()[0], b.shape()[1]}, {b.shape()[1], 1}, 0);
  const Tensor ad = a.detach(), bd = b.detach();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  // The backward products run in the precision the forward ran in, whatever autocast scope backward() is under.
  autograd::record("mm", {a, b}, out, [ad, bd, need_a, need_b, amp = cuda::autocast_dtype()](const std::vector<Tensor>& g) {
    cuda::AutocastScope scope(amp);
    return std::vector<Tensor>{need_a ? mm(g[0], transpose(bd, 0, 1)) : Tensor(),
                               need_b ? mm(transpose(ad, 0, 1), g[0]) : Tensor()};
  });
  return out;
}

// a [B, m, k] · b [B, k, n] → [B, m, n]. Differentiable.
inline Tensor bmm(const Tensor& a, const Tensor& b) {
  profiler::Scope profile_scope_("bmm");
  if (detail::op_device("bmm", {&a, &b}).is_cuda()) {
    cuda::detail::check_f32(a, "bmm", "operand");
    cuda::detail::check_f32(b, "bmm", "operand");
  }
  detail::check_same_dtype(a, b, "bmm");
  ARCLIGHT_CHECK(a.dim() == 3 && b.dim() == 3, "bmm", "expected two 3-D tensors, got ", a.str(), " and ", b.str());
  ARCLIGHT_CHECK(a.shape()[0] == b.shape()[0] && a.shape()[2] == b.shape()[1], "bmm", "incompatible shapes ", a.str(),
                 " · ", b.str(), " (expected [B, m, k] · [B, k, n])");
  Tensor out = detail::bmm_kernel(a, b, "bmm");
  const Tensor ad = a.detach(), bd = b.detach();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  autograd::record("bmm", {a, b}, out, [ad, bd, need_a, need_b, amp = cuda::autocast_dtype()](const std::vector<Tensor>& g) {
    cuda::AutocastScope scope(amp);
    return std::vector<Tensor>{need_a ? bmm(g[0], transpose(bd, 1, 2)) : Tensor(),
                               need_b ? bmm(transpose(ad, 1, 2), g[0]) : Tensor()};
  });
  return out;
}

// PyTorch matmul: 1-D·1-D dot, 2-D·2-D mm, 1-D operands promoted by a size-1 dim that is removed again,
// N-D operands as batches of matrices with broadcast batch dims. Differentiable.
inline Tensor matmul(const Tensor& a, const Tensor& b) {
  profiler::Scope profile_scope_("matmul");
  ARCLIGHT_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul", "both operands need at least 1 dim, got ", a.str(), " and ",
                 b.str());
  if (a.dim() == 1 && b.dim() == 1) {
    ARCLIGHT_CHECK(a.shape()[0] == b.shape()[0], "matmul", "dot of ", a.str(), " and ", b.str(), " needs equal sizes");
    return reshape(mm(unsqueeze(a, 0), unsqueeze(b, 1)), {});
  }
  if (a.dim() == 2 && b.dim() == 2) return mm(a, b);
  if (a.dim() == 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);
  if (b.dim() == 1) return squeeze(matmul(a, unsqueeze(b, 1)), -1);
  const std::int64_t m = a.shape()[a.dim() - 2], k = a.shape()[a.dim() - 1];
  const std::int64_t k2 = b.shape()[b.dim() - 2], n = b.shape()[b.dim() - 1];
  ARCLIGHT_CHECK(k == k2, "matmul", "inner dimensions differ: ", a.str(), " · ", b.str());
  const Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "matmul");
  std::int64_t B = 1;
  for (auto s : batch) B *= s;
  Shape ea = batch, eb = batch;
  ea.insert(ea.end(), {m, k});
  eb.insert(eb.end(), {k, n});
  Tensor a3 = reshape(expand(a, ea), {B, m, k});
  Tensor b3 = reshape(expand(b, eb), {B, k, n});
  Shape out_shape = batch;
  out_shape.insert(out_shape.end(), {m, n});
  return reshape(bmm(a3, b3), out_shape);
}

// x [..., in] · weightᵀ (weight [out, in]) + bias [out] → [..., out]. bias may be undefined. Differentiable.
inline Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor()) {
  profiler::Scope profile_scope_("linear");
  ARCLIGHT_CHECK(weight.dim() == 2, "linear", "weight must be 2-D [out, in], got ", weight.str());
  ARCLIGHT_CHECK(x.dim() >= 1 && x.shape().back() == weight.shape()[1], "linear", "input ", x.str(),
                 " does not end in the weight's in_features ", weight.shape()[1], " (weight ", weight.str(), ")");
  ARCLIGHT_CHECK(!bias.defined() || (bias.dim() == 1 && bias.shape()[0] == weight.shape()[0]), "linear", "bias ",
                 bias.str(), " must be 1-D of size out_features ", weight.shape()[0]);
  Tensor x2 = reshape(x, {-1, weight.shape()[1]});
  Tensor y = mm(x2, transpose(weight, 0, 1));
  if (bias.defined()) y = add(y, bias);
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  out_shape.push_back(weight.shape()[0]);
  return reshape(y, out_shape);
}

}  // namespace arclight::ops
