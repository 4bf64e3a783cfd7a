// Host-side declarations of the cuBLAS GEMM and cuDNN convolution launchers defined in kernels/cuda/dnn.cuh
// (compiled by the one nvcc translation unit, kernels/arclight_cuda.cu). Plain C++: no CUDA, cuBLAS or cuDNN
// header is included, so CPU-only code can include it; only builds with ARCLIGHT_WITH_CUDA link the definitions.
//
// The conventions of kernels/cuda/launchers.hpp apply (device pointers, host-side validation that throws
// arclight::Error("<op>: ..."), every CUDA / cuBLAS / cuDNN status checked and reported as
// "<op>: <call> failed: <STATUS_NAME>", asynchronous on `stream`), with these additions:
//  - dtypes: DType::f32, or DType::bf16 / DType::f16 tensors (raw 16-bit bfloat16 / IEEE half storage) with
//    float32 accumulation (mixed precision; cuDNN's f16 "pseudo half" configuration, cuBLAS CUDA_R_16F inputs
//    with CUBLAS_COMPUTE_32F). GEMM outputs are always float32; convolution outputs have the tensors' dtype, while a
//    conv bias and its gradient are always float32 (one value per channel; the master copy's precision).
//  - Handles: each (thread, device) pair owns one cuBLAS and one cuDNN handle, created lazily on its first
//    use and destroyed when the thread exits (release_dnn_handles() destroys the calling thread's earlier).
//    Every call binds the handle to `stream` first, so the handles never pin a stream.
//  - Settings (process-wide, atomics): deterministic mode, TF32 permission, the convolution workspace cap and
//    the algorithm search mode. TF32 is used only when allowed AND not deterministic.
//  - Convolution workspace: caller-owned. conv2d_workspace_bytes() chooses (and caches) the algorithm for the
//    (shape, dtype, pass, settings) key and states the bytes the launcher needs; the launcher then performs no
//    allocation and no synchronisation, so it can be captured in a CUDA graph. Why caller-owned rather than a
//    buffer owned by the handle context: the caller (the caching allocator, a graph's memory pool, a bench)
//    knows the lifetime and the stream, a hidden per-thread buffer would grow to the largest layer ever run
//    and stay there, and a context buffer reallocated mid-capture would break the graph. The friendly layer
//    (arclight/cuda/dnn.hpp) offers a growable workspace for code that does not care.
//  - Algorithm selection happens ONCE per key (a process-wide cache guarded by a mutex; descriptors and the
//    chosen algorithm live in the entry). A launcher called before its workspace query selects on the spot;
//    in kBenchmark search mode that runs cudnnFind* (which allocates and synchronises), so query first when
//    capturing a graph.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "arclight/core/dtype.hpp"
#include "kernels/common/conv_shape.hpp"
#include "kernels/cuda/launchers.hpp"
#include "kernels/cuda/launchers_ops.hpp"

namespace arclight::kernels::cuda {

// ---- settings --------------------------------------------------------------------------------------------

// Deterministic mode: convolutions use only algorithms cuDNN reports as deterministic (chosen by the heuristic,
// never by timing, so two processes pick the same one), GEMMs never use TF32. Default off.
void set_dnn_deterministic(bool on);
bool dnn_deterministic();
// Whether float32 GEMMs and convolutions may use TF32 tensor cores (ignored in deterministic mode). Default off.
void set_allow_tf32(bool on);
bool allow_tf32();
// The most workspace bytes a convolution algorithm may ask for; algorithms needing more are skipped.
// Default kDefaultConvWorkspaceLimit (256 MiB).
inline constexpr std::size_t kDefaultConvWorkspaceLimit = std::size_t(256) << 20;
void set_conv_workspace_limit(std::size_t bytes);
std::size_t conv_workspace_limit();

// How a convolution algorithm is chosen: kHeuristic (cudnnGet*Algorithm_v7: no execution, no allocation, the
// default) or kBenchmark (cudnnFind*Algorithm: times every algorithm once on scratch memory it allocates
// itself; the fastest acceptable one wins). Deterministic mode always uses the heuristic.
enum class ConvAlgoSearch : std::int32_t { kHeuristic = 0, kBenchmark = 1 };
void set_conv_algo_search(ConvAlgoSearch search);
ConvAlgoSearch conv_algo_search();

// Destroys the calling thread's cuBLAS / cuDNN handles now (they are recreated on the next call).
void release_dnn_handles() noexcept;

// ---- cuBLAS GEMM -------------------------------------------------------------------------------------------

// gemm: row-major C[m,n] = alpha·op(A)·op(B) + beta·C, op(X) = X or Xᵀ — exactly kernels::cpu::gemm's
// contract. A is stored [m,k] (lda >= k) or, when trans_a, [k,m] (lda >= m); B is [k,n] (ldb >= n) or, when
// trans_b, [n,k] (ldb >= k); C is [m,n] float32 with ldc >= n.
// dtype: f32 (A, B float32; TF32 only when allow_tf32() && !dnn_deterministic()), bf16 or f16 (A, B bfloat16 /
//   IEEE half, float32 accumulation and output).
// requires: m, n, k >= 0 and every dimension / leading dimension fits a 32-bit int; C does not alias A or B.
// ensures: C overwritten when beta == 0 (old contents, NaN included, ignored), else accumulated into; with
//   k == 0, C = beta·C (0 when beta == 0). Row-major maps onto column-major cuBLAS by computing Cᵀ = op(B)ᵀ·op(A)ᵀ,
//   i.e. swapping the operands; nothing is transposed in memory.
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const void* a,
          std::int64_t lda, const void* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc, DType dtype,
          Stream stream);

// gemm_strided_batched: `batch` independent GEMMs as above; matrix i uses A + i·stride_a, B + i·stride_b and
// C + i·stride_c (element strides; 0 broadcasts an operand, e.g. one weight for every batch item).
// requires: as gemm; batch >= 0; strides >= 0; no two C matrices share an element (checked exactly: matrices
//   one below the other or side by side within ldc are both fine).
void gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                          const void* a, std::int64_t lda, std::int64_t stride_a, const void* b, std::int64_t ldb,
                          std::int64_t stride_b, float beta, float* c, std::int64_t ldc, std::int64_t stride_c,
                          std::int64_t batch, DType dtype, Stream stream);

// ---- cuDNN convolution (NCHW) -------------------------------------------------------------------------------

enum class ConvPass : std::int32_t { kForward = 0, kBackwardData = 1, kBackwardFilter = 2 };
const char* conv_pass_name(ConvPass pass);

// The algorithm the cache holds for a key (for logs and benches).
struct ConvAlgoInfo {
  int algo = -1;                  // the cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t value
  std::string algo_name;          // e.g. "IMPLICIT_PRECOMP_GEMM"
  int math_type = 0;              // the cudnnMathType_t the descriptor uses
  bool deterministic = false;     // as cuDNN reports it
  std::size_t cudnn_workspace = 0;
  std::size_t workspace_bytes = 0;  // everything the launcher needs (cuDNN's part + padding copies + bias partials)
  bool padded_copy = false;       // asymmetric padding handled through a padded copy
};

// Hit / miss counters of the algorithm cache (process-wide, monotonic until conv_algo_cache_clear()).
struct ConvAlgoCacheStats {
  std::int64_t hits = 0, misses = 0, entries = 0;
};
ConvAlgoCacheStats conv_algo_cache_stats();
// Drops every cached algorithm and zeroes the counters. requires: no convolution running concurrently.
void conv_algo_cache_clear();

// conv2d_workspace_bytes: bytes of workspace `pass` needs for shape s and dtype (including the padded copies
// that asymmetric padding uses and, for kBackwardFilter, the bias-gradient partial sums). Selects and caches
// the algorithm on the first call for this key (a miss), afterwards a cache hit.
// requires: s filled by conv2d_shape / make_conv2d_shape and valid (positive sizes, strides and dilations >= 1,
//   pads >= 0, groups dividing both channel counts, out_h/out_w equal to the PyTorch rule, every tensor under
//   2^31 elements); dtype f32, bf16 or f16; a usable GPU (the selection talks to cuDNN).
std::size_t conv2d_workspace_bytes(const Conv2dShape& s, DType dtype, ConvPass pass);
// The cached choice for the key (selecting it first when absent, like conv2d_workspace_bytes).
ConvAlgoInfo conv2d_algo_info(const Conv2dShape& s, DType dtype, ConvPass pass);

// conv2d_forward: y = conv(x, w) (+ bias[c] broadcast over n, h, w when bias is non-null).
// Tensors: x [n, c_in, h, w], w [c_out, c_in/groups, kh, kw], y [n, c_out, out_h, out_w], contiguous, of
// `dtype`; bias null or c_out float32.
// Asymmetric padding (e.g. TF "same" with an odd total): cuDNN takes one pad per axis, so the launcher pads
// symmetrically by min(before, after) and copies x into a zero-bordered buffer (inside the workspace) that
// carries the difference; symmetric padding uses x in place.
// requires: as conv2d_workspace_bytes; workspace of >= conv2d_workspace_bytes(s, dtype, kForward) bytes
//   (else throws with the needed size), 256-byte aligned (any cudaMalloc'd pointer); y not aliasing x or w.
// ensures: y overwritten (not accumulated).
void conv2d_forward(const Conv2dShape& s, DType dtype, const void* x, const void* w, const float* bias, void* y,
                    void* workspace, std::size_t workspace_bytes, Stream stream);

// conv2d_backward_data: dx = d(Σ dy·y)/dx. dy [n, c_out, out_h, out_w], w as forward, dx [n, c_in, h, w].
// requires: workspace of >= conv2d_workspace_bytes(s, dtype, kBackwardData) bytes; dx not aliasing dy or w.
// ensures: dx overwritten (asymmetric padding: computed on the padded shape, then cropped into dx).
void conv2d_backward_data(const Conv2dShape& s, DType dtype, const void* dy, const void* w, void* dx,
                          void* workspace, std::size_t workspace_bytes, Stream stream);

// conv2d_backward_filter: dw = d(Σ dy·y)/dw summed over the batch, and dbias[c] = Σ_{n,h,w} dy[n,c,h,w].
// dw (dtype) and dbias (float32) may each be null to skip; the bias sum is a fixed-order two-level reduction
// (deterministic in every mode).
// requires: workspace of >= conv2d_workspace_bytes(s, dtype, kBackwardFilter) bytes.
// ensures: dw and dbias overwritten (not accumulated).
void conv2d_backward_filter(const Conv2dShape& s, DType dtype, const void* x, const void* dy, void* dw,
                            float* dbias, void* workspace, std::size_t workspace_bytes, Stream stream);

// ---- batch normalization through cuDNN ----------------------------------------------------------------------
// The alternative to conv_blocks.cuh's batch-norm kernels (which the op layer uses): bench_device_dnn times both
// on the same tensors and reports how far apart their results are, so the faster can be chosen on measurements.
// Float32 x viewed as [n, c, inner] (NCHW with inner = H·W), spatial mode (statistics per channel over n·inner);
// `persistent` selects cuDNN's CUDNN_BATCHNORM_SPATIAL_PERSISTENT variant. No fused activation.
// cudnn_batch_norm_forward_train: the contract of batch_norm_forward_train (launchers_ops.hpp) with identity
// activation, except: weight and bias must be non-null, eps >= CUDNN_BN_MIN_EPSILON (0 in cuDNN 9), the running
// statistics (both non-null, or both null to skip) are averaged with factor `momentum`.
void cudnn_batch_norm_forward_train(const BatchNormDims& d, bool persistent, const float* x, const float* weight,
                                    const float* bias, float eps, float momentum, float* running_mean,
                                    float* running_var, float* y, float* save_mean, float* save_invstd,
                                    Stream stream);
// cudnn_batch_norm_backward_train: dx, dweight, dbias (all non-null) through the batch statistics saved by the
// forward (save_mean, save_invstd from either implementation: both store mean and 1/sqrt(var + eps)).
void cudnn_batch_norm_backward_train(const BatchNormDims& d, bool persistent, const float* x, const float* dy,
                                     const float* weight, float eps, const float* save_mean, const float* save_invstd,
                                     float* dx, float* dweight, float* dbias, Stream stream);

}  // namespace arclight::kernels::cuda
