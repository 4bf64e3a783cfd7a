// Host-side declarations of the CUDA kernels behind the op layer's device dispatch (include/arclight/ops/ run
// an op on the GPU when its tensors live there): strided elementwise math, copies and dtype conversion, fills,
// reductions (kernels/cuda/elementwise.cuh), the conv-block kernels — batch norm with a fused activation,
// activations, squeeze-excite scaling, global average pooling, scaled weight standardisation
// (kernels/cuda/conv_blocks.cuh) — window pooling (kernels/cuda/pooling.cuh) and depthwise convolution
// (kernels/cuda/depthwise.cuh). Plain C++ (no CUDA header); only builds with ARCLIGHT_WITH_CUDA link the
// definitions, which live in the one nvcc translation unit kernels/arclight_cuda.cu.
//
// The conventions of kernels/cuda/launchers.hpp apply: float32 math, device pointers, sizes in elements,
// host-side validation throwing arclight::Error("<op>: ..."), every CUDA status checked, asynchronous on
// `stream`, no allocation and no synchronisation (temporaries come in as caller-owned workspaces whose size a
// *_workspace_floats() function states), fixed-order reductions (no floating-point atomics: bit-reproducible).
#pragma once

#include <cstdint>

#include "kernels/common/activation_math.hpp"
#include "kernels/common/conv_shape.hpp"
#include "kernels/common/elementwise_math.hpp"
#include "kernels/cuda/launchers.hpp"

namespace arclight::kernels::cuda {

// ---- strided elementwise (kernels/cuda/elementwise.cuh) ------------------------------------------------

// The most dims an elementwise layout describes (the op layer collapses contiguous dims first; ranks above
// this are refused with a message).
inline constexpr int kMaxEwDims = 8;

// The index space of an elementwise launch: `ndim` sizes (row-major, the output's logical shape) and, per
// operand, element strides (0 on broadcast dims; negative strides are not produced by the op layer and are
// refused). Operand 0 is the output, 1.. the inputs in argument order. ndim == 0 is a single element.
struct EwLayout {
  int ndim = 0;
  std::int64_t sizes[kMaxEwDims] = {};
  std::int64_t strides[4][kMaxEwDims] = {};
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= sizes[d];
    return n;
  }
};

// ew_unary: out = op(a) elementwise (ew_is_binary(op) false; float output; EwParams as elementwise_math.hpp).
// requires: layout with operands 0 (out) and 1 (a); out does not partially overlap a (exactly equal layouts,
//   i.e. in place, are fine).
// ensures: every element of out the layout addresses is written.
void ew_unary(EwOp op, EwParams params, const EwLayout& layout, float* out, const float* a, Stream stream);

// ew_binary: out = op(a, b) elementwise; `out` is float*, or std::uint8_t* (0/1) when ew_writes_mask(op).
// requires: ew_is_binary(op); layout with operands 0 (out), 1 (a), 2 (b); in place allowed as for ew_unary.
void ew_binary(EwOp op, const EwLayout& layout, void* out, const float* a, const float* b, Stream stream);

// ew_where: out = cond ? a : b (cond u8, nonzero = true). Operands 0 out, 1 cond, 2 a, 3 b.
void ew_where(const EwLayout& layout, float* out, const std::uint8_t* cond, const float* a, const float* b,
              Stream stream);

// ew_copy: out = a elementwise for elements of `elem_bytes` bytes (1, 2, 4 or 8: any dtype, bits copied).
// Operands 0 out, 1 a. Gathers strided / broadcast sources into any strided destination (contiguous() and
// copy_ on the device).
void ew_copy(const EwLayout& layout, void* out, const void* a, int elem_bytes, Stream stream);

// ew_convert: contiguous dtype conversion of `count` elements. Supported pairs: f32 -> bf16 and f32 -> f16 (round
// to nearest even, NaN stays NaN; f16: subnormals kept, overflow to ±inf — kernels/common/f16_math.hpp),
// bf16 -> f32 and f16 -> f32 (exact), f32 <-> f64, i64 -> f32, u8 -> f32 (comparison masks).
// `in_dtype` / `out_dtype` are arclight::DType values passed as their integer codes (this header does not include
// core/dtype.hpp's enum on purpose: the numbering is the enum's, see static_assert in the .cuh).
void ew_convert(int out_dtype, int in_dtype, std::int64_t count, void* out, const void* in, Stream stream);

// ew_fill: every one of `count` contiguous elements of `elem_bytes` bytes (1, 2, 4, 8) gets the low
// elem_bytes bytes of `bits` (the caller encodes the value: a float's bit pattern, an int64, ...).
void ew_fill(void* out, std::int64_t count, int elem_bytes, std::uint64_t bits, Stream stream);

// ---- reductions (kernels/cuda/elementwise.cuh) --------------------------------------------------------

enum class ReduceOp : std::int32_t { kSum = 0, kMax = 1, kMin = 2 };

// A reduction's index space: kept dims (the output, row-major, contiguous) and reduced dims, each with the
// INPUT's element strides. n_keep == 0 is a full reduction to one value; n_red == 0 copies (times scale).
struct ReduceLayoutDev {
  int n_keep = 0, n_red = 0;
  std::int64_t keep_sizes[kMaxEwDims] = {}, keep_strides[kMaxEwDims] = {};
  std::int64_t red_sizes[kMaxEwDims] = {}, red_strides[kMaxEwDims] = {};
};

// Floats of workspace reduce() needs (0 when every output is reduced by one block; a two-level reduction of
// few outputs over many elements needs partials).
std::int64_t reduce_workspace_floats(const ReduceLayoutDev& layout);
// reduce: out[k] = scale · op over the reduced elements of output k (kSum accumulates in float with a fixed
// tree per output; kMax / kMin propagate NaN, as torch.amax). requires: workspace of
// reduce_workspace_floats(layout) floats (may be null when that is 0); an empty reduced set gives 0 for kSum
// and is refused for kMax / kMin. ensures: out (prod(keep_sizes) floats, contiguous) written, deterministic.
void reduce(ReduceOp op, const ReduceLayoutDev& layout, const float* in, float scale, float* out, float* workspace,
            Stream stream);

// ---- conv-block kernels (kernels/cuda/conv_blocks.cuh) --------------------------------------------------

// x viewed as [n, c, inner] contiguous (BatchNorm2d: inner = H·W; BatchNorm1d: 1 or L).
struct BatchNormDims {
  std::int64_t n = 0, c = 0, inner = 1;
};

// Floats of workspace the batch-norm launchers need (per-channel partial sums of a two-level reduction).
std::int64_t batch_norm_workspace_floats(const BatchNormDims& d);

// batch_norm_forward_train: batch statistics (biased variance, computed with a shifted or two-pass scheme, not
// E[x²] − E[x]²), y = act((x − mean)·invstd·w + b), save_mean / save_invstd [c] for the backward, and — when
// running_mean / running_var are non-null — r = (1 − momentum)·r + momentum·batch with the UNBIASED variance.
// weight / bias null mean 1 / 0. requires: n·inner > 1; eps >= 0; momentum in [0, 1]; workspace of
// batch_norm_workspace_floats(d) floats. ensures: y, save_mean, save_invstd written; running stats updated.
void batch_norm_forward_train(const BatchNormDims& d, const float* x, const float* weight, const float* bias,
                              float eps, float momentum, float* running_mean, float* running_var, float* y,
                              float* save_mean, float* save_invstd, Activation act, float* workspace, Stream stream);
// batch_norm_forward_eval: y = act((x − rm)/sqrt(rv + eps)·w + b) with the running statistics.
void batch_norm_forward_eval(const BatchNormDims& d, const float* x, const float* weight, const float* bias, float eps,
                             const float* running_mean, const float* running_var, float* y, Activation act,
                             Stream stream);
// batch_norm_backward_train: gradients through the batch statistics (the pre-activation is recomputed from x and
// the saved statistics). dx, dweight, dbias may each be null to skip. requires: as the forward, dy [n, c, inner].
void batch_norm_backward_train(const BatchNormDims& d, const float* x, const float* dy, const float* weight,
                               const float* bias, const float* save_mean, const float* save_invstd, float* dx,
                               float* dweight, float* dbias, Activation act, float* workspace, Stream stream);
// batch_norm_backward_eval: gradients with the (constant) running statistics.
void batch_norm_backward_eval(const BatchNormDims& d, const float* x, const float* dy, const float* weight,
                              const float* bias, float eps, const float* running_mean, const float* running_var,
                              float* dx, float* dweight, float* dbias, Activation act, float* workspace,
                              Stream stream);

// activation_forward / activation_backward: y = act(x), dx = dy·act'(x), `count` contiguous floats
// (activation_math.hpp; dx may alias dy).
void activation_forward(Activation act, std::int64_t count, const float* x, float* y, Stream stream);
void activation_backward(Activation act, std::int64_t count, const float* x, const float* dy, float* dx,
                         Stream stream);

// se_scale_forward: y[n, c, k] = x[n, c, k]·gate[n, c] (x, y [n, c, hw]; y may alias x).
void se_scale_forward(std::int64_t n, std::int64_t c, std::int64_t hw, const float* x, const float* gate, float* y,
                      Stream stream);
// se_scale_backward: dgate[n, c] = Σ_k dy·x (fixed order), dx = dy·gate. Either output may be null.
void se_scale_backward(std::int64_t n, std::int64_t c, std::int64_t hw, const float* x, const float* gate,
                       const float* dy, float* dx, float* dgate, Stream stream);

// global_avg_pool_forward: y[p] = mean of x[p, 0..hw) for the `planes` = n·c planes.
void global_avg_pool_forward(std::int64_t planes, std::int64_t hw, const float* x, float* y, Stream stream);
// global_avg_pool_backward: dx[p, k] = dy[p] / hw.
void global_avg_pool_backward(std::int64_t planes, std::int64_t hw, const float* dy, float* dx, Stream stream);

// scaled weight standardisation (NFNet's ScaledStdConv2d, kernels/cpu/weight_standardization.hpp semantics):
// per output row r of w [c_out, fan_in]: w_hat = gain[r]·gamma·(w − mean_r)·inv_denom_r with
// inv_denom_r = 1/sqrt(var_r·fan_in + eps) (biased variance). gain may be null (= 1).
void ws_forward(std::int64_t c_out, std::int64_t fan_in, const float* w, const float* gain, float gamma, float eps,
                float* w_hat, Stream stream);
// ws_backward: dw (and dgain when non-null) from dw_hat, through the row statistics.
void ws_backward(std::int64_t c_out, std::int64_t fan_in, const float* w, const float* gain, float gamma, float eps,
                 const float* dw_hat, float* dw, float* dgain, Stream stream);

// ---- window pooling (kernels/cuda/pooling.cuh) ----------------------------------------------------------

// avg_pool2d_forward / backward, max_pool2d_forward / backward: kernels/cpu/pooling.hpp's semantics on
// x [n, c, h, w] and y [n, c, out_h, out_w] (s from kernels::pool2d_shape). max's indices (int64, y's size, the
// flat in-plane index of each window's first maximum) may be null in the forward; the backward needs them.
// The backward passes gather per input element (no atomics) and overwrite dx.
void avg_pool2d_forward(const Pool2dShape& s, const float* x, float* y, bool count_include_pad, Stream stream);
void avg_pool2d_backward(const Pool2dShape& s, const float* dy, float* dx, bool count_include_pad, Stream stream);
void max_pool2d_forward(const Pool2dShape& s, const float* x, float* y, std::int64_t* indices, Stream stream);
void max_pool2d_backward(const Pool2dShape& s, const float* dy, const std::int64_t* indices, float* dx, Stream stream);

// ---- depthwise convolution (kernels/cuda/depthwise.cuh) ----------------------------------------------------

// Depthwise convolution with channel multiplier 1 (s.groups == s.c_in == s.c_out), any kernel, stride, dilation and
// explicit (asymmetric) pads, float32 NCHW contiguous — kernels/cpu/conv2d.hpp's contract. bias may be null.
// backward_filter: dw [c, kh, kw] and dbias [c] (either may be null) overwritten, deterministic (fixed-order
// two-level reduction through `workspace` of depthwise_conv2d_backward_filter_workspace_floats(s) floats).
void depthwise_conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, float* y,
                              Stream stream);
void depthwise_conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx, Stream stream);
std::int64_t depthwise_conv2d_backward_filter_workspace_floats(const Conv2dShape& s);
void depthwise_conv2d_backward_filter(const Conv2dShape& s, const float* x, const float* dy, float* dw, float* dbias,
                                      float* workspace, Stream stream);

// ---- dropout masks (kernels/cuda/random.cuh) ------------------------------------------------------------------

// keep_mask: mask[i] = (u_i < keep) ? 1/keep : 0 (0 everywhere when keep == 0), u_i the uniform double the host's
// rand(…, f64, gen) gives element i after gen.reserve(blocks) returned `first_block` (blocks = ceil(2·count / 4)):
// the same mask as on the CPU. requires: 0 <= keep <= 1; mask of count floats. ensures: mask written.
void keep_mask(std::int64_t count, std::uint64_t seed, std::uint64_t first_block, double keep, float* mask,
               Stream stream);

}  // namespace arclight::kernels::cuda
