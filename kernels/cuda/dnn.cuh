// Definitions of the cuBLAS GEMM and cuDNN convolution launchers declared in kernels/cuda/launchers_dnn.hpp
// (read its header comment for the contracts), compiled only inside kernels/arclight_cuda.cu. Four parts:
//  1. status checks for cuBLAS / cuDNN ("<op>: <call> failed: CUBLAS_STATUS_... / CUDNN_STATUS_...", plus
//     cuDNN's last-error detail when it has one) and the per-(thread, device) handle context;
//  2. the GEMMs: row-major C = op(A)·op(B) mapped onto column-major cuBLAS by swapping the operands
//     (Cᵀ = op(B)ᵀ·op(A)ᵀ), f32, bf16 or f16 inputs, f32 accumulation and output, k == 0 handled by our own kernel;
//  3. the convolution plan cache: one ConvPlan (descriptors, chosen algorithm + math type, workspace layout)
//     per key = (device, pass, dtype, every Conv2dShape field, deterministic, TF32, search mode, workspace
//     cap), built once under a mutex and shared (std::shared_ptr<const ConvPlan>) by every later call;
//  4. the launchers and four small kernels: zero-border padding copy and crop (asymmetric padding), bias add,
//     and the bias gradient as a fixed-order two-level reduction.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <initializer_list>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "arclight/core/error.hpp"
#include "kernels/common/conv_shape.hpp"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers_dnn.hpp"

namespace arclight::kernels::cuda {

namespace dnn_detail {

// ---- 1. status checks and handles -----------------------------------------------------------------------

inline void check_cublas(cublasStatus_t st, const char* op, const char* call) {
  if (st != CUBLAS_STATUS_SUCCESS)
    ::arclight::fail(op, call, " failed: ", cublasGetStatusName(st), " (", cublasGetStatusString(st), ")");
}

inline std::string cudnn_status_text(cudnnStatus_t st) {
  std::string s = cudnnGetErrorString(st);
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  if (detail[0] != '\0') s += std::string(" (") + detail + ")";
  return s;
}

inline void check_cudnn(cudnnStatus_t st, const char* op, const char* call) {
  if (st != CUDNN_STATUS_SUCCESS) ::arclight::fail(op, call, " failed: ", cudnn_status_text(st));
}

struct Handles {
  int device = -1;
  cublasHandle_t blas = nullptr;
  cudnnHandle_t dnn = nullptr;
};

// The calling thread's handles, one pair per device, destroyed with the thread (for the main thread: before
// static destructors and atexit handlers, i.e. while the CUDA runtime is still up). Destruction ignores
// statuses: it runs in noexcept contexts and a failure there has nobody left to report to.
struct ThreadHandles {
  std::vector<Handles> per_device;
  void release() noexcept {
    if (per_device.empty()) return;
    int current = -1;
    const bool have_current = cudaGetDevice(&current) == cudaSuccess;
    for (Handles& h : per_device) {
      if (cudaSetDevice(h.device) != cudaSuccess) continue;
      if (h.blas != nullptr) cublasDestroy(h.blas);
      if (h.dnn != nullptr) cudnnDestroy(h.dnn);
    }
    per_device.clear();
    if (have_current) cudaSetDevice(current);
    cudaGetLastError();
  }
  ~ThreadHandles() { release(); }
};

inline ThreadHandles& thread_handles() {
  thread_local ThreadHandles handles;
  return handles;
}

inline int current_device(const char* op) {
  int device = -1;
  detail::check_cuda(cudaGetDevice(&device), op, "cudaGetDevice");
  return device;
}

// The calling thread's handles for the current device, created on first use.
inline Handles& handles_for_current_device(const char* op) {
  const int device = current_device(op);
  ThreadHandles& th = thread_handles();
  for (Handles& h : th.per_device)
    if (h.device == device) return h;
  Handles h;
  h.device = device;
  check_cublas(cublasCreate(&h.blas), op, "cublasCreate");
  const cudnnStatus_t st = cudnnCreate(&h.dnn);
  if (st != CUDNN_STATUS_SUCCESS) {
    cublasDestroy(h.blas);
    check_cudnn(st, op, "cudnnCreate");
  }
  // Tensor-core paths are chosen per call through the compute type, never through the handle's math mode.
  const cublasStatus_t mst = cublasSetMathMode(h.blas, CUBLAS_DEFAULT_MATH);
  if (mst != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(h.blas);
    cudnnDestroy(h.dnn);
    check_cublas(mst, op, "cublasSetMathMode");
  }
  th.per_device.push_back(h);
  return th.per_device.back();
}

// ---- settings ---------------------------------------------------------------------------------------------

inline std::atomic<bool> g_deterministic{false};
inline std::atomic<bool> g_allow_tf32{false};
inline std::atomic<std::size_t> g_workspace_limit{kDefaultConvWorkspaceLimit};
inline std::atomic<int> g_search{int(ConvAlgoSearch::kHeuristic)};

inline bool tf32_enabled() { return g_allow_tf32.load() && !g_deterministic.load(); }

// The 16-bit storage types of mixed precision (bf16, f16): inputs of the GEMMs and convolutions, float32
// accumulation either way.
inline bool is_half_type(DType dtype) { return dtype == DType::bf16 || dtype == DType::f16; }

inline std::size_t elem_size(DType dtype) { return is_half_type(dtype) ? 2 : 4; }

inline void check_dtype(DType dtype, const char* op) {
  ARCLIGHT_CHECK(dtype == DType::f32 || is_half_type(dtype), op, "dtype must be f32, bf16 or f16, got ",
                 dtype_name(dtype));
}

inline void check_int(std::int64_t v, const char* op, const char* name) {
  ARCLIGHT_CHECK(v <= std::int64_t(INT_MAX), op, name, " = ", v, " does not fit the 32-bit int cuBLAS/cuDNN take");
}

inline std::size_t align_up(std::size_t v, std::size_t a = 256) { return (v + a - 1) / a * a; }

// ---- 2. GEMM ------------------------------------------------------------------------------------------------

// c[b·stride_c + i·ldc + j] = beta == 0 ? 0 : beta·c[...] for every batch b, row i < m, column j < n.
__global__ void scale_matrix_kernel(float* __restrict__ c, std::int64_t m, std::int64_t n, std::int64_t ldc,
                                    std::int64_t stride_c, std::int64_t batch, float beta) {
  const std::int64_t total = batch * m * n;
  for (std::int64_t t = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t b = t / (m * n), r = t - b * m * n, i = r / n, j = r - i * n;
    float* p = c + b * stride_c + i * ldc + j;
    *p = beta == 0.f ? 0.f : beta * *p;
  }
}

inline void check_gemm(const char* op, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                       std::int64_t lda, std::int64_t ldb, std::int64_t ldc, DType dtype) {
  check_dtype(dtype, op);
  ARCLIGHT_CHECK(m >= 0 && n >= 0 && k >= 0, op, "sizes must be >= 0, got m=", m, ", n=", n, ", k=", k);
  check_int(m, op, "m");
  check_int(n, op, "n");
  check_int(k, op, "k");
  // Row-major storage widths: A is [m,k] or (trans_a) [k,m]; B is [k,n] or (trans_b) [n,k]; C is [m,n].
  const std::int64_t a_width = trans_a ? m : k, b_width = trans_b ? k : n;
  ARCLIGHT_CHECK(lda >= std::max<std::int64_t>(1, a_width), op, "lda = ", lda, " but A is stored [",
                 trans_a ? k : m, ", ", a_width, "]", trans_a ? " (trans_a)" : "", ": expected lda >= ",
                 std::max<std::int64_t>(1, a_width));
  ARCLIGHT_CHECK(ldb >= std::max<std::int64_t>(1, b_width), op, "ldb = ", ldb, " but B is stored [",
                 trans_b ? n : k, ", ", b_width, "]", trans_b ? " (trans_b)" : "", ": expected ldb >= ",
                 std::max<std::int64_t>(1, b_width));
  ARCLIGHT_CHECK(ldc >= std::max<std::int64_t>(1, n), op, "ldc = ", ldc, " but C is [", m, ", ", n,
                 "]: expected ldc >= ", std::max<std::int64_t>(1, n));
  check_int(lda, op, "lda");
  check_int(ldb, op, "ldb");
  check_int(ldc, op, "ldc");
}

// The first batch index t whose C matrix (at t·stride_c) shares an element with matrix 0, or -1 when none does
// (then no two matrices overlap: the layout is translation-invariant). Matrix t's element (i', j') meets matrix
// 0's (i, j) when t·stride_c = R·ldc + J with |R| <= m-1 and |J| <= n-1 < ldc, i.e. for D = r·ldc + rem
// (0 <= rem < ldc): (R, J) = (r, rem) or (r+1, rem-ldc). Matrices side by side (stride_c >= n, ldc >= batch·n)
// are accepted, as are matrices one below the other.
inline std::int64_t first_overlapping_c(std::int64_t m, std::int64_t n, std::int64_t ldc, std::int64_t stride_c,
                                        std::int64_t batch) {
  if (batch <= 1 || m == 0 || n == 0) return -1;
  const std::int64_t last = (m - 1) * ldc + (n - 1);  // the largest offset difference that can collide
  for (std::int64_t t = 1; t < batch; ++t) {
    const std::int64_t d = t * stride_c;
    if (d > last) break;
    const std::int64_t r = d / ldc, rem = d % ldc;
    if ((r <= m - 1 && rem <= n - 1) || (r + 1 <= m - 1 && ldc - rem <= n - 1)) return t;
  }
  return -1;
}

// A and B's cuBLAS type; C is always CUDA_R_32F with CUBLAS_COMPUTE_32F (bf16 / f16 inputs: mixed precision with
// float32 accumulation, a combination cublasGemmEx and cublasGemmStridedBatchedEx support for both 16-bit types).
inline cudaDataType gemm_io_type(DType dtype) {
  return dtype == DType::bf16 ? CUDA_R_16BF : dtype == DType::f16 ? CUDA_R_16F : CUDA_R_32F;
}

inline cublasComputeType_t gemm_compute_type(DType dtype) {
  return dtype == DType::f32 && tf32_enabled() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

// ---- 3. convolution plans -----------------------------------------------------------------------------------

inline std::string shape_str(const Conv2dShape& s) {
  return str_cat("input [", s.n, ", ", s.c_in, ", ", s.h, ", ", s.w, "], weight [", s.c_out, ", ",
                 s.groups > 0 ? s.c_in / s.groups : s.c_in, ", ", s.kh, ", ", s.kw, "], output [", s.n, ", ",
                 s.c_out, ", ", s.out_h, ", ", s.out_w, "], stride (", s.stride_h, ", ", s.stride_w,
                 "), padding (top ", s.pad_top, ", bottom ", s.pad_bottom, ", left ", s.pad_left, ", right ",
                 s.pad_right, "), dilation (", s.dilation_h, ", ", s.dilation_w, "), groups ", s.groups);
}

// The host-side shape validation every conv launcher starts with (the CUDA twin of check_conv2d_shape).
inline void check_conv_shape(const Conv2dShape& s, DType dtype, const char* op) {
  check_dtype(dtype, op);
  ARCLIGHT_CHECK(s.n > 0 && s.c_in > 0 && s.h > 0 && s.w > 0 && s.c_out > 0 && s.kh > 0 && s.kw > 0, op,
                 "all sizes must be positive, got ", shape_str(s));
  ARCLIGHT_CHECK(s.stride_h >= 1 && s.stride_w >= 1, op, "stride must be >= 1, got ", shape_str(s));
  ARCLIGHT_CHECK(s.dilation_h >= 1 && s.dilation_w >= 1, op, "dilation must be >= 1, got ", shape_str(s));
  ARCLIGHT_CHECK(s.pad_top >= 0 && s.pad_bottom >= 0 && s.pad_left >= 0 && s.pad_right >= 0, op,
                 "padding must be >= 0, got ", shape_str(s));
  ARCLIGHT_CHECK(s.groups >= 1 && s.c_in % s.groups == 0 && s.c_out % s.groups == 0, op,
                 "groups must divide both channel counts, got ", shape_str(s));
  const std::int64_t oh = conv_out_size(s.h, s.kh, s.stride_h, s.pad_top, s.pad_bottom, s.dilation_h);
  const std::int64_t ow = conv_out_size(s.w, s.kw, s.stride_w, s.pad_left, s.pad_right, s.dilation_w);
  ARCLIGHT_CHECK(oh >= 1 && ow >= 1, op, "the window does not fit the padded input: ", shape_str(s));
  ARCLIGHT_CHECK(s.out_h == oh && s.out_w == ow, op, "output size (", s.out_h, ", ", s.out_w,
                 ") does not match the shape's arithmetic (", oh, ", ", ow, "); fill it with conv2d_shape: ",
                 shape_str(s));
  const std::int64_t hp = s.h + std::max(s.pad_top, s.pad_bottom) - std::min(s.pad_top, s.pad_bottom);
  const std::int64_t wp = s.w + std::max(s.pad_left, s.pad_right) - std::min(s.pad_left, s.pad_right);
  const std::int64_t biggest = std::max({s.n * s.c_in * hp * wp, s.weight_numel(), s.output_numel()});
  ARCLIGHT_CHECK(biggest <= std::int64_t(INT_MAX), op, "a tensor of ", biggest,
                 " elements exceeds cuDNN's 2^31 limit: ", shape_str(s));
}

// Everything a conv launcher needs, fixed at selection time and never mutated afterwards.
struct ConvPlan {
  ConvPass pass = ConvPass::kForward;
  // Descriptors: x_desc describes the input cuDNN sees ([n, c_in, hp, wp], the padded copy when padded_copy).
  cudnnTensorDescriptor_t x_desc = nullptr, y_desc = nullptr;
  cudnnFilterDescriptor_t w_desc = nullptr;
  cudnnConvolutionDescriptor_t conv_desc = nullptr;
  int algo = -1;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  bool deterministic = false;
  std::string algo_name;
  // Asymmetric padding: cuDNN pads (pad_h, pad_w) = (min(top, bottom), min(left, right)); the input is copied
  // into a [n, c_in, hp, wp] buffer whose zero border carries the rest (extra_top rows above, extra_left
  // columns to the left, the remainder below / to the right).
  bool padded_copy = false;
  std::int64_t hp = 0, wp = 0, extra_top = 0, extra_left = 0;
  // Workspace layout (bytes; offsets 256-aligned): [cuDNN workspace][padded buffer][bias partials].
  std::size_t cudnn_ws = 0, pad_offset = 0, pad_bytes = 0, partial_offset = 0, total = 0;
  std::int64_t bias_splits = 1;  // per-channel partial sums of the bias gradient

  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan() {
    if (x_desc != nullptr) cudnnDestroyTensorDescriptor(x_desc);
    if (y_desc != nullptr) cudnnDestroyTensorDescriptor(y_desc);
    if (w_desc != nullptr) cudnnDestroyFilterDescriptor(w_desc);
    if (conv_desc != nullptr) cudnnDestroyConvolutionDescriptor(conv_desc);
  }
};

inline const char* fwd_algo_name(int a) {
  static const char* const names[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT",
                                      "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  return a >= 0 && a < 8 ? names[a] : "?";
}
inline const char* bwd_data_algo_name(int a) {
  static const char* const names[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  return a >= 0 && a < 6 ? names[a] : "?";
}
inline const char* bwd_filter_algo_name(int a) {
  static const char* const names[] = {"ALGO_0", "ALGO_1",           "FFT",       "ALGO_3",
                                      "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
  return a >= 0 && a < 7 ? names[a] : "?";
}
inline const char* algo_name(ConvPass pass, int a) {
  return pass == ConvPass::kForward ? fwd_algo_name(a)
                                    : pass == ConvPass::kBackwardData ? bwd_data_algo_name(a) : bwd_filter_algo_name(a);
}

// Bias-gradient partial sums per channel: enough blocks to fill a GPU without tiny blocks; independent of the
// device, so the reduction order (and the bits) are the same on every GPU.
inline std::int64_t bias_splits_for(const Conv2dShape& s) {
  const std::int64_t per_channel = s.n * s.out_h * s.out_w;
  return std::clamp<std::int64_t>((per_channel + 8191) / 8192, 1, 256);
}

// Walks cuDNN's candidate list (heuristic order or measured order) and keeps the first one that succeeded,
// is deterministic when required, uses an allowed math type, reports a workspace size for the final
// descriptor and fits the cap. `ws_query(algo, size_t*)` asks cuDNN for the workspace of the descriptor as set.
template <typename Perf, typename WsQuery>
void choose_algo(ConvPlan& plan, const Perf* perfs, int count, DType dtype, bool deterministic, bool tf32,
                 std::size_t limit, const Conv2dShape& s, const char* op, WsQuery&& ws_query) {
  std::string rejected;
  for (int i = 0; i < count; ++i) {
    const Perf& p = perfs[i];
    const int a = int(p.algo);
    const std::string name = algo_name(plan.pass, a);
    if (p.status != CUDNN_STATUS_SUCCESS) {
      rejected += str_cat(" ", name, "=", cudnnGetErrorString(p.status), ";");
      continue;
    }
    if (deterministic && p.determinism != CUDNN_DETERMINISTIC) {
      rejected += str_cat(" ", name, "=non-deterministic;");
      continue;
    }
    cudnnMathType_t math = p.mathType;
    if (dtype == DType::f32 && !tf32) {
      // No tensor cores for float32 unless TF32 is allowed: FMA math only.
      if (math == CUDNN_TENSOR_OP_MATH || math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) {
        rejected += str_cat(" ", name, "=tensor-op math (TF32 off);");
        continue;
      }
      math = CUDNN_FMA_MATH;
    }
    check_cudnn(cudnnSetConvolutionMathType(plan.conv_desc, math), op, "cudnnSetConvolutionMathType");
    std::size_t ws = 0;
    const cudnnStatus_t st = ws_query(a, &ws);
    if (st != CUDNN_STATUS_SUCCESS) {
      rejected += str_cat(" ", name, "=workspace query ", cudnnGetErrorString(st), ";");
      continue;
    }
    ws = std::max(ws, p.memory);
    if (ws > limit) {
      rejected += str_cat(" ", name, "=needs ", ws, " bytes > cap ", limit, ";");
      continue;
    }
    plan.algo = a;
    plan.math = math;
    plan.deterministic = p.determinism == CUDNN_DETERMINISTIC;
    plan.cudnn_ws = ws;
    plan.algo_name = name;
    return;
  }
  ::arclight::fail(op, "no cuDNN ", conv_pass_name(plan.pass), " algorithm is usable for ", shape_str(s),
                   ", dtype ", dtype_name(dtype), deterministic ? ", deterministic mode" : "",
                   " (candidates:", rejected.empty() ? " none" : rejected, ")");
}

// Builds the plan of one key: descriptors, output-size cross-check, algorithm choice, workspace layout.
inline std::shared_ptr<ConvPlan> build_plan(const Conv2dShape& s, DType dtype, ConvPass pass, bool deterministic,
                                            bool tf32, ConvAlgoSearch search, std::size_t limit, const char* op) {
  auto plan = std::make_shared<ConvPlan>();
  plan->pass = pass;
  const std::int64_t pad_h = std::min(s.pad_top, s.pad_bottom), pad_w = std::min(s.pad_left, s.pad_right);
  plan->extra_top = s.pad_top - pad_h;
  plan->extra_left = s.pad_left - pad_w;
  plan->hp = s.h + (s.pad_top - pad_h) + (s.pad_bottom - pad_h);
  plan->wp = s.w + (s.pad_left - pad_w) + (s.pad_right - pad_w);
  plan->padded_copy = plan->hp != s.h || plan->wp != s.w;

  // Tensors in the storage type; the convolution descriptor's compute type stays FLOAT for every dtype (for
  // f16 cuDNN's "pseudo half" configuration: half data, float32 accumulation).
  const cudnnDataType_t dt =
      dtype == DType::bf16 ? CUDNN_DATA_BFLOAT16 : dtype == DType::f16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
  check_cudnn(cudnnCreateTensorDescriptor(&plan->x_desc), op, "cudnnCreateTensorDescriptor");
  check_cudnn(cudnnCreateTensorDescriptor(&plan->y_desc), op, "cudnnCreateTensorDescriptor");
  check_cudnn(cudnnCreateFilterDescriptor(&plan->w_desc), op, "cudnnCreateFilterDescriptor");
  check_cudnn(cudnnCreateConvolutionDescriptor(&plan->conv_desc), op, "cudnnCreateConvolutionDescriptor");
  check_cudnn(cudnnSetTensor4dDescriptor(plan->x_desc, CUDNN_TENSOR_NCHW, dt, int(s.n), int(s.c_in), int(plan->hp),
                                         int(plan->wp)),
              op, "cudnnSetTensor4dDescriptor(x)");
  check_cudnn(cudnnSetTensor4dDescriptor(plan->y_desc, CUDNN_TENSOR_NCHW, dt, int(s.n), int(s.c_out), int(s.out_h),
                                         int(s.out_w)),
              op, "cudnnSetTensor4dDescriptor(y)");
  check_cudnn(cudnnSetFilter4dDescriptor(plan->w_desc, dt, CUDNN_TENSOR_NCHW, int(s.c_out), int(s.c_in / s.groups),
                                         int(s.kh), int(s.kw)),
              op, "cudnnSetFilter4dDescriptor");
  check_cudnn(cudnnSetConvolution2dDescriptor(plan->conv_desc, int(pad_h), int(pad_w), int(s.stride_h),
                                              int(s.stride_w), int(s.dilation_h), int(s.dilation_w),
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              op, "cudnnSetConvolution2dDescriptor");
  check_cudnn(cudnnSetConvolutionGroupCount(plan->conv_desc, int(s.groups)), op, "cudnnSetConvolutionGroupCount");
  const cudnnMathType_t initial_math =
      is_half_type(dtype) ? CUDNN_TENSOR_OP_MATH : (tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH);
  check_cudnn(cudnnSetConvolutionMathType(plan->conv_desc, initial_math), op, "cudnnSetConvolutionMathType");

  // cuDNN's own output arithmetic on the (padded, symmetric) problem must agree with ours.
  int on = 0, oc = 0, oh = 0, ow = 0;
  check_cudnn(cudnnGetConvolution2dForwardOutputDim(plan->conv_desc, plan->x_desc, plan->w_desc, &on, &oc, &oh, &ow),
              op, "cudnnGetConvolution2dForwardOutputDim");
  ARCLIGHT_CHECK(on == s.n && oc == s.c_out && oh == s.out_h && ow == s.out_w, op,
                 "internal error: cuDNN computes output [", on, ", ", oc, ", ", oh, ", ", ow, "] for ", shape_str(s));

  Handles& h = handles_for_current_device(op);
  check_cudnn(cudnnSetStream(h.dnn, nullptr), op, "cudnnSetStream");
  const bool benchmark = search == ConvAlgoSearch::kBenchmark && !deterministic;
  ConvPlan& p = *plan;
  if (pass == ConvPass::kForward) {
    int max_count = 0;
    check_cudnn(cudnnGetConvolutionForwardAlgorithmMaxCount(h.dnn, &max_count), op,
                "cudnnGetConvolutionForwardAlgorithmMaxCount");
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perfs(std::size_t(std::max(max_count, 1)));
    int returned = 0;
    if (benchmark)
      check_cudnn(cudnnFindConvolutionForwardAlgorithm(h.dnn, p.x_desc, p.w_desc, p.conv_desc, p.y_desc, max_count,
                                                       &returned, perfs.data()),
                  op, "cudnnFindConvolutionForwardAlgorithm");
    else
      check_cudnn(cudnnGetConvolutionForwardAlgorithm_v7(h.dnn, p.x_desc, p.w_desc, p.conv_desc, p.y_desc, max_count,
                                                         &returned, perfs.data()),
                  op, "cudnnGetConvolutionForwardAlgorithm_v7");
    choose_algo(p, perfs.data(), returned, dtype, deterministic, tf32, limit, s, op, [&](int a, std::size_t* ws) {
      return cudnnGetConvolutionForwardWorkspaceSize(h.dnn, p.x_desc, p.w_desc, p.conv_desc, p.y_desc,
                                                     cudnnConvolutionFwdAlgo_t(a), ws);
    });
  } else if (pass == ConvPass::kBackwardData) {
    int max_count = 0;
    check_cudnn(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h.dnn, &max_count), op,
                "cudnnGetConvolutionBackwardDataAlgorithmMaxCount");
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perfs(std::size_t(std::max(max_count, 1)));
    int returned = 0;
    if (benchmark)
      check_cudnn(cudnnFindConvolutionBackwardDataAlgorithm(h.dnn, p.w_desc, p.y_desc, p.conv_desc, p.x_desc,
                                                            max_count, &returned, perfs.data()),
                  op, "cudnnFindConvolutionBackwardDataAlgorithm");
    else
      check_cudnn(cudnnGetConvolutionBackwardDataAlgorithm_v7(h.dnn, p.w_desc, p.y_desc, p.conv_desc, p.x_desc,
                                                              max_count, &returned, perfs.data()),
                  op, "cudnnGetConvolutionBackwardDataAlgorithm_v7");
    choose_algo(p, perfs.data(), returned, dtype, deterministic, tf32, limit, s, op, [&](int a, std::size_t* ws) {
      return cudnnGetConvolutionBackwardDataWorkspaceSize(h.dnn, p.w_desc, p.y_desc, p.conv_desc, p.x_desc,
                                                          cudnnConvolutionBwdDataAlgo_t(a), ws);
    });
  } else {
    int max_count = 0;
    check_cudnn(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h.dnn, &max_count), op,
                "cudnnGetConvolutionBackwardFilterAlgorithmMaxCount");
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perfs(std::size_t(std::max(max_count, 1)));
    int returned = 0;
    if (benchmark)
      check_cudnn(cudnnFindConvolutionBackwardFilterAlgorithm(h.dnn, p.x_desc, p.y_desc, p.conv_desc, p.w_desc,
                                                              max_count, &returned, perfs.data()),
                  op, "cudnnFindConvolutionBackwardFilterAlgorithm");
    else
      check_cudnn(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h.dnn, p.x_desc, p.y_desc, p.conv_desc, p.w_desc,
                                                                max_count, &returned, perfs.data()),
                  op, "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
    choose_algo(p, perfs.data(), returned, dtype, deterministic, tf32, limit, s, op, [&](int a, std::size_t* ws) {
      return cudnnGetConvolutionBackwardFilterWorkspaceSize(h.dnn, p.x_desc, p.y_desc, p.conv_desc, p.w_desc,
                                                            cudnnConvolutionBwdFilterAlgo_t(a), ws);
    });
  }

  // Workspace layout. Forward and backward-filter pad x; backward-data computes dx on the padded shape.
  std::size_t end = align_up(p.cudnn_ws);
  if (p.padded_copy) {
    p.pad_offset = end;
    p.pad_bytes = std::size_t(s.n * s.c_in * p.hp * p.wp) * elem_size(dtype);
    end = align_up(end + p.pad_bytes);
  }
  if (pass == ConvPass::kBackwardFilter) {
    p.bias_splits = bias_splits_for(s);
    p.partial_offset = end;
    end = align_up(end + std::size_t(s.c_out * p.bias_splits) * sizeof(float));
  }
  p.total = end;
  return plan;
}

using ConvKey = std::array<std::int64_t, 28>;

inline ConvKey make_key(int device, const Conv2dShape& s, DType dtype, ConvPass pass, bool deterministic, bool tf32,
                        ConvAlgoSearch search, std::size_t limit) {
  return ConvKey{device,       int(pass),       int(dtype),     deterministic ? 1 : 0,
                 tf32 ? 1 : 0, int(search),     std::int64_t(limit),
                 s.n,          s.c_in,          s.h,            s.w,
                 s.c_out,      s.kh,            s.kw,           s.stride_h,
                 s.stride_w,   s.pad_top,       s.pad_bottom,   s.pad_left,
                 s.pad_right,  s.dilation_h,    s.dilation_w,   s.groups,
                 s.out_h,      s.out_w,         0,              0,
                 0};
}

struct PlanCache {
  std::mutex mutex;
  std::map<ConvKey, std::shared_ptr<const ConvPlan>> plans;
  std::atomic<std::int64_t> hits{0}, misses{0};
};

inline PlanCache& plan_cache() {
  static PlanCache* cache = new PlanCache();  // never destroyed: plans may be looked up during static teardown
  return *cache;
}

// The plan for (s, dtype, pass) under the current settings: validates, then a cache hit or a selection.
inline std::shared_ptr<const ConvPlan> get_plan(const Conv2dShape& s, DType dtype, ConvPass pass, const char* op) {
  check_conv_shape(s, dtype, op);
  const bool deterministic = g_deterministic.load();
  const bool tf32 = dtype == DType::f32 && tf32_enabled();
  const auto search = deterministic ? ConvAlgoSearch::kHeuristic : ConvAlgoSearch(g_search.load());
  const std::size_t limit = g_workspace_limit.load();
  const ConvKey key = make_key(current_device(op), s, dtype, pass, deterministic, tf32, search, limit);
  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  const auto it = cache.plans.find(key);
  if (it != cache.plans.end()) {
    cache.hits.fetch_add(1);
    return it->second;
  }
  cache.misses.fetch_add(1);
  std::shared_ptr<const ConvPlan> plan = build_plan(s, dtype, pass, deterministic, tf32, search, limit, op);
  cache.plans.emplace(key, plan);
  return plan;
}

// ---- 4. helper kernels ------------------------------------------------------------------------------------------

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// dst [planes, hp, wp] = src [planes, h, w] placed at (top, left), zeros elsewhere. E: raw storage (bits copied).
template <typename E>
__global__ void pad_copy_kernel(const E* __restrict__ src, E* __restrict__ dst, std::int64_t planes, std::int64_t h,
                                std::int64_t w, std::int64_t hp, std::int64_t wp, std::int64_t top,
                                std::int64_t left) {
  const std::int64_t total = planes * hp * wp;
  for (std::int64_t t = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t plane = t / (hp * wp), r = t - plane * hp * wp, i = r / wp - top, j = r % wp - left;
    dst[t] = (i >= 0 && i < h && j >= 0 && j < w) ? src[(plane * h + i) * w + j] : E(0);
  }
}

// dst [planes, h, w] = src [planes, hp, wp] at offset (top, left): the crop of a padded gradient.
template <typename E>
__global__ void crop_copy_kernel(const E* __restrict__ src, E* __restrict__ dst, std::int64_t planes, std::int64_t h,
                                 std::int64_t w, std::int64_t hp, std::int64_t wp, std::int64_t top,
                                 std::int64_t left) {
  const std::int64_t total = planes * h * w;
  for (std::int64_t t = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t plane = t / (h * w), r = t - plane * h * w, i = r / w, j = r - i * w;
    dst[t] = src[(plane * hp + i + top) * wp + j + left];
  }
}

// y[(b·channels + c)·plane + p] += bias[c], in float, rounded once to T.
template <typename T>
__global__ void bias_add_kernel(T* __restrict__ y, const float* __restrict__ bias, std::int64_t channels,
                                std::int64_t plane, std::int64_t total) {
  for (std::int64_t t = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t c = (t / plane) % channels;
    store(y + t, to_float(y[t]) + bias[c]);
  }
}

// Partial bias-gradient sums: block (split, c) sums dy[n, c, p] over the flattened (n, p) indices
// split·256 + tid, stepping splits·256, into partial[c·splits + split] (channels c = blockIdx.y, stepping
// gridDim.y). Fixed assignment and tree: deterministic.
template <typename T>
__global__ void __launch_bounds__(256) bias_grad_partial_kernel(const T* __restrict__ dy, std::int64_t batch,
                                                                std::int64_t channels, std::int64_t plane,
                                                                float* __restrict__ partial) {
  __shared__ float scratch[33];
  const std::int64_t splits = gridDim.x, count = batch * plane;
  for (std::int64_t c = blockIdx.y; c < channels; c += gridDim.y) {  // gridDim.y is capped at 65535
    float acc = 0.f;
    for (std::int64_t j = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < count; j += splits * blockDim.x) {
      const std::int64_t b = j / plane, p = j - b * plane;
      acc += to_float(dy[(b * channels + c) * plane + p]);
    }
    acc = detail::block_sum(acc, scratch);  // ends with a barrier: scratch is free for the next channel
    if (threadIdx.x == 0) partial[c * splits + blockIdx.x] = acc;
  }
}

// dbias[c] = Σ_s partial[c·splits + s], one block per channel, fixed order.
__global__ void __launch_bounds__(256) bias_grad_finish_kernel(const float* __restrict__ partial, std::int64_t splits,
                                                               float* __restrict__ dbias) {
  __shared__ float scratch[33];
  float acc = 0.f;
  for (std::int64_t i = threadIdx.x; i < splits; i += blockDim.x) acc += partial[blockIdx.x * splits + i];
  acc = detail::block_sum(acc, scratch);
  if (threadIdx.x == 0) dbias[blockIdx.x] = acc;
}

inline void launch_pad_copy(const void* src, void* dst, std::int64_t planes, const Conv2dShape& s,
                            const ConvPlan& p, DType dtype, Stream stream, const char* op) {
  const std::int64_t total = planes * p.hp * p.wp;
  const unsigned grid = detail::elementwise_grid(total, 256);
  if (is_half_type(dtype))
    pad_copy_kernel<unsigned short><<<grid, 256, 0, stream>>>(static_cast<const unsigned short*>(src),
                                                              static_cast<unsigned short*>(dst), planes, s.h, s.w,
                                                              p.hp, p.wp, p.extra_top, p.extra_left);
  else
    pad_copy_kernel<float><<<grid, 256, 0, stream>>>(static_cast<const float*>(src), static_cast<float*>(dst), planes,
                                                     s.h, s.w, p.hp, p.wp, p.extra_top, p.extra_left);
  detail::check_launch(op);
}

inline void launch_crop_copy(const void* src, void* dst, std::int64_t planes, const Conv2dShape& s,
                             const ConvPlan& p, DType dtype, Stream stream, const char* op) {
  const std::int64_t total = planes * s.h * s.w;
  const unsigned grid = detail::elementwise_grid(total, 256);
  if (is_half_type(dtype))
    crop_copy_kernel<unsigned short><<<grid, 256, 0, stream>>>(static_cast<const unsigned short*>(src),
                                                               static_cast<unsigned short*>(dst), planes, s.h, s.w,
                                                               p.hp, p.wp, p.extra_top, p.extra_left);
  else
    crop_copy_kernel<float><<<grid, 256, 0, stream>>>(static_cast<const float*>(src), static_cast<float*>(dst), planes,
                                                      s.h, s.w, p.hp, p.wp, p.extra_top, p.extra_left);
  detail::check_launch(op);
}

inline void check_workspace(const ConvPlan& p, const Conv2dShape& s, DType dtype, const void* workspace,
                            std::size_t workspace_bytes, const char* op) {
  ARCLIGHT_CHECK(workspace_bytes >= p.total, op, "workspace has ", workspace_bytes, " bytes, this ",
                 conv_pass_name(p.pass), " of ", shape_str(s), " (", dtype_name(dtype), ", algorithm ", p.algo_name,
                 ") needs ", p.total, " (ask conv2d_workspace_bytes)");
  ARCLIGHT_CHECK(p.total == 0 || workspace != nullptr, op, "workspace is null but ", p.total, " bytes are needed");
  ARCLIGHT_CHECK(reinterpret_cast<std::uintptr_t>(workspace) % 256 == 0, op,
                 "workspace must be 256-byte aligned (a cudaMalloc'd pointer)");
}

inline void check_ptr(const void* p, const char* op, const char* name) {
  ARCLIGHT_CHECK(p != nullptr, op, name, " must not be null");
}
// check_ptr for each (pointer, name), in order.
inline void check_ptrs(const char* op, std::initializer_list<std::pair<const void*, const char*>> ptrs) {
  for (const auto& [p, name] : ptrs) check_ptr(p, op, name);
}

}  // namespace dnn_detail

// ---- settings ---------------------------------------------------------------------------------------------

void set_dnn_deterministic(bool on) { dnn_detail::g_deterministic.store(on); }
bool dnn_deterministic() { return dnn_detail::g_deterministic.load(); }
void set_allow_tf32(bool on) { dnn_detail::g_allow_tf32.store(on); }
bool allow_tf32() { return dnn_detail::g_allow_tf32.load(); }
void set_conv_workspace_limit(std::size_t bytes) { dnn_detail::g_workspace_limit.store(bytes); }
std::size_t conv_workspace_limit() { return dnn_detail::g_workspace_limit.load(); }
void set_conv_algo_search(ConvAlgoSearch search) {
  ARCLIGHT_CHECK(search == ConvAlgoSearch::kHeuristic || search == ConvAlgoSearch::kBenchmark,
                 "set_conv_algo_search", "unknown search mode ", int(search), " (expected kHeuristic or kBenchmark)");
  dnn_detail::g_search.store(int(search));
}
ConvAlgoSearch conv_algo_search() { return ConvAlgoSearch(dnn_detail::g_search.load()); }
void release_dnn_handles() noexcept { dnn_detail::thread_handles().release(); }

const char* conv_pass_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::kForward: return "forward";
    case ConvPass::kBackwardData: return "backward-data";
    case ConvPass::kBackwardFilter: return "backward-filter";
  }
  return "?";
}

// ---- GEMM -------------------------------------------------------------------------------------------------

namespace dnn_detail {

// The shared body of gemm and gemm_strided_batched (errors name `op`; batch == 1 calls cublasGemmEx).
inline void gemm_impl(const char* op, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                      float alpha, const void* a, std::int64_t lda, std::int64_t stride_a, const void* b,
                      std::int64_t ldb, std::int64_t stride_b, float beta, float* c, std::int64_t ldc,
                      std::int64_t stride_c, std::int64_t batch, DType dtype, Stream stream) {
  check_gemm(op, trans_a, trans_b, m, n, k, lda, ldb, ldc, dtype);
  ARCLIGHT_CHECK(batch >= 0, op, "batch must be >= 0, got ", batch);
  check_int(batch, op, "batch");
  ARCLIGHT_CHECK(stride_a >= 0 && stride_b >= 0 && stride_c >= 0, op, "strides must be >= 0, got stride_a=",
                 stride_a, ", stride_b=", stride_b, ", stride_c=", stride_c);
  if (m == 0 || n == 0 || batch == 0) return;
  const std::int64_t clash = first_overlapping_c(m, n, ldc, stride_c, batch);
  ARCLIGHT_CHECK(clash < 0, op, "stride_c = ", stride_c, " makes C matrices 0 and ", clash, " overlap (m=", m,
                 ", n=", n, ", ldc=", ldc, ")");
  check_ptr(c, op, "C");
  if (k == 0) {  // C = beta·C: done here, not left to the library's quick-return rules
    const std::int64_t total = batch * m * n;
    scale_matrix_kernel<<<detail::elementwise_grid(total, 256), 256, 0, stream>>>(c, m, n, ldc, stride_c, batch,
                                                                                  beta);
    detail::check_launch(op);
    return;
  }
  check_ptr(a, op, "A");
  check_ptr(b, op, "B");
  Handles& h = handles_for_current_device(op);
  check_cublas(cublasSetStream(h.blas, stream), op, "cublasSetStream");
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cudaDataType io = gemm_io_type(dtype);
  const cublasComputeType_t compute = gemm_compute_type(dtype);
  // Column-major view: Cᵀ [n, m] = op(B)ᵀ [n, k] · op(A)ᵀ [k, m]. Row-major B (ld ldb) read column-major is
  // Bᵀ, so op_b = trans_b turns it into op(B)ᵀ; likewise A. C row-major [m, n] is Cᵀ column-major, ld ldc.
  if (batch == 1)
    check_cublas(cublasGemmEx(h.blas, op_b, op_a, int(n), int(m), int(k), &alpha, b, io, int(ldb), a, io, int(lda),
                              &beta, c, CUDA_R_32F, int(ldc), compute, CUBLAS_GEMM_DEFAULT),
                 op, "cublasGemmEx");
  else
    check_cublas(cublasGemmStridedBatchedEx(h.blas, op_b, op_a, int(n), int(m), int(k), &alpha, b, io, int(ldb),
                                            stride_b, a, io, int(lda), stride_a, &beta, c, CUDA_R_32F, int(ldc),
                                            stride_c, int(batch), compute, CUBLAS_GEMM_DEFAULT),
                 op, "cublasGemmStridedBatchedEx");
}

}  // namespace dnn_detail

void gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                          const void* a, std::int64_t lda, std::int64_t stride_a, const void* b, std::int64_t ldb,
                          std::int64_t stride_b, float beta, float* c, std::int64_t ldc, std::int64_t stride_c,
                          std::int64_t batch, DType dtype, Stream stream) {
  dnn_detail::gemm_impl("gemm_strided_batched", trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b,
                        beta, c, ldc, stride_c, batch, dtype, stream);
}

void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const void* a,
          std::int64_t lda, const void* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc, DType dtype,
          Stream stream) {
  dnn_detail::gemm_impl("gemm", trans_a, trans_b, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1, dtype,
                        stream);
}

// ---- convolutions -----------------------------------------------------------------------------------------------

ConvAlgoCacheStats conv_algo_cache_stats() {
  dnn_detail::PlanCache& cache = dnn_detail::plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  return ConvAlgoCacheStats{cache.hits.load(), cache.misses.load(), std::int64_t(cache.plans.size())};
}

void conv_algo_cache_clear() {
  dnn_detail::PlanCache& cache = dnn_detail::plan_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  cache.plans.clear();
  cache.hits.store(0);
  cache.misses.store(0);
}

std::size_t conv2d_workspace_bytes(const Conv2dShape& s, DType dtype, ConvPass pass) {
  return dnn_detail::get_plan(s, dtype, pass, "conv2d_workspace_bytes")->total;
}

ConvAlgoInfo conv2d_algo_info(const Conv2dShape& s, DType dtype, ConvPass pass) {
  const auto p = dnn_detail::get_plan(s, dtype, pass, "conv2d_algo_info");
  ConvAlgoInfo info;
  info.algo = p->algo;
  info.algo_name = p->algo_name;
  info.math_type = int(p->math);
  info.deterministic = p->deterministic;
  info.cudnn_workspace = p->cudnn_ws;
  info.workspace_bytes = p->total;
  info.padded_copy = p->padded_copy;
  return info;
}

void conv2d_forward(const Conv2dShape& s, DType dtype, const void* x, const void* w, const float* bias, void* y,
                    void* workspace, std::size_t workspace_bytes, Stream stream) {
  constexpr const char* op = "conv2d_forward";
  const auto plan = dnn_detail::get_plan(s, dtype, ConvPass::kForward, op);
  const dnn_detail::ConvPlan& p = *plan;
  dnn_detail::check_workspace(p, s, dtype, workspace, workspace_bytes, op);
  dnn_detail::check_ptr(x, op, "input");
  dnn_detail::check_ptr(w, op, "weight");
  dnn_detail::check_ptr(y, op, "output");
  dnn_detail::Handles& h = dnn_detail::handles_for_current_device(op);
  dnn_detail::check_cudnn(cudnnSetStream(h.dnn, stream), op, "cudnnSetStream");
  char* ws = static_cast<char*>(workspace);
  const void* xin = x;
  if (p.padded_copy) {
    dnn_detail::launch_pad_copy(x, ws + p.pad_offset, s.n * s.c_in, s, p, dtype, stream, op);
    xin = ws + p.pad_offset;
  }
  const float alpha = 1.f, beta = 0.f;
  dnn_detail::check_cudnn(cudnnConvolutionForward(h.dnn, &alpha, p.x_desc, xin, p.w_desc, w, p.conv_desc,
                                                  cudnnConvolutionFwdAlgo_t(p.algo), p.cudnn_ws > 0 ? ws : nullptr,
                                                  p.cudnn_ws, &beta, p.y_desc, y),
                          op, "cudnnConvolutionForward");
  if (bias != nullptr) {
    const std::int64_t total = s.output_numel(), plane = s.out_h * s.out_w;
    const unsigned grid = detail::elementwise_grid(total, 256);
    if (dtype == DType::bf16)
      dnn_detail::bias_add_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(y), bias,
                                                                           s.c_out, plane, total);
    else if (dtype == DType::f16)
      dnn_detail::bias_add_kernel<__half><<<grid, 256, 0, stream>>>(static_cast<__half*>(y), bias, s.c_out, plane,
                                                                    total);
    else
      dnn_detail::bias_add_kernel<float><<<grid, 256, 0, stream>>>(static_cast<float*>(y), bias, s.c_out, plane, total);
    detail::check_launch(op);
  }
}

void conv2d_backward_data(const Conv2dShape& s, DType dtype, const void* dy, const void* w, void* dx,
                          void* workspace, std::size_t workspace_bytes, Stream stream) {
  constexpr const char* op = "conv2d_backward_data";
  const auto plan = dnn_detail::get_plan(s, dtype, ConvPass::kBackwardData, op);
  const dnn_detail::ConvPlan& p = *plan;
  dnn_detail::check_workspace(p, s, dtype, workspace, workspace_bytes, op);
  dnn_detail::check_ptr(dy, op, "output gradient");
  dnn_detail::check_ptr(w, op, "weight");
  dnn_detail::check_ptr(dx, op, "input gradient");
  dnn_detail::Handles& h = dnn_detail::handles_for_current_device(op);
  dnn_detail::check_cudnn(cudnnSetStream(h.dnn, stream), op, "cudnnSetStream");
  char* ws = static_cast<char*>(workspace);
  void* target = p.padded_copy ? static_cast<void*>(ws + p.pad_offset) : dx;
  const float alpha = 1.f, beta = 0.f;
  dnn_detail::check_cudnn(cudnnConvolutionBackwardData(h.dnn, &alpha, p.w_desc, w, p.y_desc, dy, p.conv_desc,
                                                       cudnnConvolutionBwdDataAlgo_t(p.algo),
                                                       p.cudnn_ws > 0 ? ws : nullptr, p.cudnn_ws, &beta, p.x_desc,
                                                       target),
                          op, "cudnnConvolutionBackwardData");
  if (p.padded_copy) dnn_detail::launch_crop_copy(target, dx, s.n * s.c_in, s, p, dtype, stream, op);
}

void conv2d_backward_filter(const Conv2dShape& s, DType dtype, const void* x, const void* dy, void* dw,
                            float* dbias, void* workspace, std::size_t workspace_bytes, Stream stream) {
  constexpr const char* op = "conv2d_backward_filter";
  const auto plan = dnn_detail::get_plan(s, dtype, ConvPass::kBackwardFilter, op);
  const dnn_detail::ConvPlan& p = *plan;
  dnn_detail::check_workspace(p, s, dtype, workspace, workspace_bytes, op);
  dnn_detail::check_ptr(dy, op, "output gradient");
  if (dw != nullptr) dnn_detail::check_ptr(x, op, "input");
  char* ws = static_cast<char*>(workspace);
  if (dw != nullptr) {
    dnn_detail::Handles& h = dnn_detail::handles_for_current_device(op);
    dnn_detail::check_cudnn(cudnnSetStream(h.dnn, stream), op, "cudnnSetStream");
    const void* xin = x;
    if (p.padded_copy) {
      dnn_detail::launch_pad_copy(x, ws + p.pad_offset, s.n * s.c_in, s, p, dtype, stream, op);
      xin = ws + p.pad_offset;
    }
    const float alpha = 1.f, beta = 0.f;
    dnn_detail::check_cudnn(cudnnConvolutionBackwardFilter(h.dnn, &alpha, p.x_desc, xin, p.y_desc, dy, p.conv_desc,
                                                           cudnnConvolutionBwdFilterAlgo_t(p.algo),
                                                           p.cudnn_ws > 0 ? ws : nullptr, p.cudnn_ws, &beta, p.w_desc,
                                                           dw),
                            op, "cudnnConvolutionBackwardFilter");
  }
  if (dbias != nullptr) {
    float* partial = reinterpret_cast<float*>(ws + p.partial_offset);
    const dim3 grid(unsigned(p.bias_splits), unsigned(std::min<std::int64_t>(s.c_out, 65535)));
    const std::int64_t plane = s.out_h * s.out_w;
    if (dtype == DType::bf16)
      dnn_detail::bias_grad_partial_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(dy), s.n, s.c_out, plane, partial);
    else if (dtype == DType::f16)
      dnn_detail::bias_grad_partial_kernel<__half><<<grid, 256, 0, stream>>>(static_cast<const __half*>(dy), s.n,
                                                                             s.c_out, plane, partial);
    else
      dnn_detail::bias_grad_partial_kernel<float><<<grid, 256, 0, stream>>>(static_cast<const float*>(dy), s.n,
                                                                            s.c_out, plane, partial);
    detail::check_launch(op);
    dnn_detail::bias_grad_finish_kernel<<<unsigned(s.c_out), 256, 0, stream>>>(partial, p.bias_splits, dbias);
    detail::check_launch(op);
  }
}

// ---- batch normalization through cuDNN ----------------------------------------------------------------------

namespace dnn_detail {

// The descriptors of one batch-norm call: x as [n, c, inner, 1] float32 NCHW, the per-channel tensor derived
// from it. Destroyed with the object (per call: these calls are for measurement, not a hot path of the op layer).
struct BnDescs {
  cudnnTensorDescriptor_t x = nullptr, ch = nullptr;
  cudnnBatchNormMode_t mode = CUDNN_BATCHNORM_SPATIAL;
  BnDescs(const BatchNormDims& d, bool persistent, float eps, const char* op) {
    ARCLIGHT_CHECK(d.n >= 1 && d.c >= 1 && d.inner >= 1 && d.n * d.inner > 1, op,
                   "expected n, c, inner >= 1 and more than one value per channel, got [", d.n, ", ", d.c, ", ",
                   d.inner, "]");
    ARCLIGHT_CHECK(d.n <= INT_MAX && d.c <= INT_MAX && d.inner <= INT_MAX && d.n * d.c * d.inner <= INT_MAX, op,
                   "tensor [", d.n, ", ", d.c, ", ", d.inner, "] is too large for cuDNN's 32-bit descriptors");
    ARCLIGHT_CHECK(double(eps) >= CUDNN_BN_MIN_EPSILON, op, "eps ", eps, " is below cuDNN's minimum ",
                   CUDNN_BN_MIN_EPSILON);
    mode = persistent ? CUDNN_BATCHNORM_SPATIAL_PERSISTENT : CUDNN_BATCHNORM_SPATIAL;
    check_cudnn(cudnnCreateTensorDescriptor(&x), op, "cudnnCreateTensorDescriptor");
    const cudnnStatus_t st = cudnnCreateTensorDescriptor(&ch);
    if (st != CUDNN_STATUS_SUCCESS) {
      cudnnDestroyTensorDescriptor(x);
      check_cudnn(st, op, "cudnnCreateTensorDescriptor");
    }
    try {
      check_cudnn(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(d.n), int(d.c),
                                             int(d.inner), 1),
                  op, "cudnnSetTensor4dDescriptor");
      check_cudnn(cudnnDeriveBNTensorDescriptor(ch, x, mode), op, "cudnnDeriveBNTensorDescriptor");
    } catch (...) {
      destroy();
      throw;
    }
  }
  void destroy() noexcept {
    if (x) cudnnDestroyTensorDescriptor(x);
    if (ch) cudnnDestroyTensorDescriptor(ch);
    x = ch = nullptr;
  }
  ~BnDescs() { destroy(); }
  BnDescs(const BnDescs&) = delete;
  BnDescs& operator=(const BnDescs&) = delete;
};

}  // namespace dnn_detail

// cuDNN marks its batch-norm calls deprecated in favour of the graph API; they remain supported in cuDNN 9.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#pragma nv_diag_suppress 1444
#pragma nv_diag_suppress 1215

void cudnn_batch_norm_forward_train(const BatchNormDims& d, bool persistent, const float* x, const float* weight,
                                    const float* bias, float eps, float momentum, float* running_mean,
                                    float* running_var, float* y, float* save_mean, float* save_invstd,
                                    Stream stream) {
  constexpr const char* op = "cudnn_batch_norm_forward_train";
  dnn_detail::check_ptrs(op, {{x, "input"}, {weight, "weight"}, {bias, "bias"}, {y, "output"},
                              {save_mean, "save_mean"}, {save_invstd, "save_invstd"}});
  ARCLIGHT_CHECK((running_mean == nullptr) == (running_var == nullptr), op,
                 "running_mean and running_var must both be given or both be null");
  ARCLIGHT_CHECK(momentum >= 0.f && momentum <= 1.f, op, "momentum ", momentum, " is outside [0, 1]");
  dnn_detail::BnDescs desc(d, persistent, eps, op);  // after every host-side check: this talks to cuDNN
  dnn_detail::Handles& h = dnn_detail::handles_for_current_device(op);
  dnn_detail::check_cudnn(cudnnSetStream(h.dnn, stream), op, "cudnnSetStream");
  const float alpha = 1.f, beta = 0.f;
  dnn_detail::check_cudnn(
      cudnnBatchNormalizationForwardTraining(h.dnn, desc.mode, &alpha, &beta, desc.x, x, desc.x, y, desc.ch, weight,
                                             bias, running_mean ? double(momentum) : 0.0, running_mean, running_var,
                                             double(eps), save_mean, save_invstd),
      op, "cudnnBatchNormalizationForwardTraining");
}

void cudnn_batch_norm_backward_train(const BatchNormDims& d, bool persistent, const float* x, const float* dy,
                                     const float* weight, float eps, const float* save_mean, const float* save_invstd,
                                     float* dx, float* dweight, float* dbias, Stream stream) {
  constexpr const char* op = "cudnn_batch_norm_backward_train";
  dnn_detail::check_ptrs(op, {{x, "input"}, {dy, "dy"}, {weight, "weight"}, {save_mean, "save_mean"},
                              {save_invstd, "save_invstd"}, {dx, "dx"}, {dweight, "dweight"}, {dbias, "dbias"}});
  dnn_detail::BnDescs desc(d, persistent, eps, op);
  dnn_detail::Handles& h = dnn_detail::handles_for_current_device(op);
  dnn_detail::check_cudnn(cudnnSetStream(h.dnn, stream), op, "cudnnSetStream");
  const float one = 1.f, zero = 0.f;
  dnn_detail::check_cudnn(cudnnBatchNormalizationBackward(h.dnn, desc.mode, &one, &zero, &one, &zero, desc.x, x, desc.x,
                                                          dy, desc.x, dx, desc.ch, weight, dweight, dbias, double(eps),
                                                          save_mean, save_invstd),
                          op, "cudnnBatchNormalizationBackward");
}

#pragma nv_diag_default 1444
#pragma nv_diag_default 1215
#pragma GCC diagnostic pop

}  // namespace arclight::kernels::cuda
