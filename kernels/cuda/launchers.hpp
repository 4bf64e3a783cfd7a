// The host-side declarations of everything kernels/arclight_cuda.cu defines: a few raw runtime primitives
// (device query, device memory, copies, synchronisation) and the launchers of the CUDA kernels in
// kernels/cuda/*.cuh. This header is plain C++ (no CUDA header), so the host compiler can include it;
// only builds with ARCLIGHT_WITH_CUDA link the definitions. The friendly layer on top is
// include/arclight/cuda/runtime.hpp.
//
// Conventions shared by every launcher:
//  - float32 only; all pointers are device pointers unless named *_host; sizes are element counts.
//  - Launchers validate the shapes and configs they are given on the host and throw arclight::Error with
//    the op name, what was found and what was expected; every CUDA / cuBLAS status is checked and a
//    failure throws arclight::Error("<op>: <cuda call> failed: <cudaGetErrorString>").
//  - Launchers are asynchronous on `stream` (nullptr = the legacy default stream) and never synchronise
//    or allocate, so they can be captured in a CUDA graph. Temporaries come in as caller-owned `workspace`
//    buffers whose size a *_workspace_floats() function states.
//  - Device data (labels, class weights) is not inspected on the host: an out-of-range label makes its row's
//    loss (and gradient row) NaN instead of reading out of bounds, so the trainer's non-finite check sees it.
//  - Reductions are deterministic: fixed-shape trees, no floating-point atomics.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/common/arc_margin_math.hpp"
#include "kernels/common/gem_math.hpp"
#include "kernels/common/optim_math.hpp"
#include "kernels/common/schedule_math.hpp"
#include "kernels/common/softmax_math.hpp"

struct CUstream_st;
struct CUevent_st;

namespace arclight::kernels::cuda {

// The same types as cudaStream_t and cudaEvent_t, without including cuda_runtime.h.
using Stream = CUstream_st*;
using Event = CUevent_st*;

// ---- runtime primitives -----------------------------------------------------------------------------

// Number of usable CUDA devices; 0 (never a throw) when there is no GPU, no driver or the driver is too old.
// *why (if non-null) receives the CUDA error text in that case.
int device_count(std::string* why = nullptr);
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 50 MiB L2)". requires: 0 <= device < device_count().
std::string device_description(int device);
// Properties the benches size their buffers by.
struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0;
  int multiprocessors = 0;
  std::int64_t l2_cache_bytes = 0;
  std::int64_t global_memory_bytes = 0;
};
DeviceInfo device_info(int device);
void set_device(int device);
// The calling thread's current device (cudaGetDevice).
int get_device();


// Device memory (plain cudaMalloc / cudaFree; the caching allocator builds on these). free of null is a no-op.
void* device_malloc(std::size_t bytes, const char* op);
void device_free(void* ptr) noexcept;
// Page-locked host memory (cudaHostAlloc / cudaFreeHost) for fast, truly asynchronous copies; the caching
// pinned allocator (arclight/cuda/allocator.hpp) builds on these. 0 bytes gives null; free of null is a no-op.
void* pinned_host_malloc(std::size_t bytes, const char* op);
void pinned_host_free(void* ptr) noexcept;
void memcpy_host_to_device(void* dst, const void* src_host, std::size_t bytes, Stream stream, const char* op);
void memcpy_device_to_host(void* dst_host, const void* src, std::size_t bytes, Stream stream, const char* op);
void memcpy_device_to_device(void* dst, const void* src, std::size_t bytes, Stream stream, const char* op);
// Sets every byte to `byte_value` (0xFF turns float32 data into NaN: the tests' garbage fill).
void memset_device(void* dst, int byte_value, std::size_t bytes, Stream stream, const char* op);
// Waits for `stream`, then reports any pending (asynchronous) kernel error under `op`.
void synchronize(Stream stream, const char* op);
Stream stream_create(const char* op);
void stream_destroy(Stream stream) noexcept;
// Events order host work after device work: event_record marks the current end of `stream`; event_synchronize
// blocks the host until everything enqueued before the mark has finished (a never-recorded event is complete).
// Timing is disabled (cudaEventDisableTiming): these are for synchronisation, the benches time with their own.
Event event_create(const char* op);
void event_record(Event event, Stream stream, const char* op);
void event_synchronize(Event event, const char* op);
void event_destroy(Event event) noexcept;

// ---- GeM pooling (kernels/cuda/gem.cuh) --------------------------------------------------------------

// gem_forward: y[i] = (Σ_h max(x[i*hw+h], eps)^p / hw)^(1/p) for the n*c planes of x = [n, c, hw].
// requires: x of n*c*hw floats, y of n*c; p points at ONE device float > 0 (the learnable exponent, read
//   on the device so a graph can capture the call); eps > 0.
// ensures: y written (not accumulated).
void gem_forward(const GemShape& shape, const float* x, const float* p, float eps, float* y, Stream stream);

// Floats of workspace gem_backward needs for the deterministic reduction of dL/dp.
std::int64_t gem_backward_workspace_floats(const GemShape& shape);
// gem_backward: gx = dL/dx and *gp = dL/dp for L = Σ_i gy[i]·y[i] (y recomputed from x).
// requires: as gem_forward; gy of n*c floats; gx (n*c*hw) and gp (one float) may each be null to skip;
//   workspace of gem_backward_workspace_floats(shape) floats when gp is non-null.
// ensures: gx and *gp written (not accumulated); *gp is bitwise reproducible (fixed-order reduction).
void gem_backward(const GemShape& shape, const float* x, const float* gy, const float* p, float eps, float* gx,
                  float* gp, float* workspace, Stream stream);

// ---- label-smoothing cross-entropy and the fused ArcMargin → LS-CE (kernels/cuda/cross_entropy.cuh) -------

// Which row kernel a softmax-row launcher uses (plain rows; sub-centre rows always take the scalar streaming
// kernel, and a forward without a gradient reads each row once whatever the path). kAuto (the default, what
// production calls) picks the fastest measured one. The gradient pass re-reads the row, so:
//  - kStreaming: one block of 512 threads per row, two blocks per SM; pass 1 front to back, the gradient pass
//    back to front from global memory (L2-warm end first). 12 bytes per element moved against the 8-byte floor.
//  - kSmemCache: the same kernel, plus pass 1 keeps the first part of the row in dynamic shared memory (half an
//    SM's shared memory per block, two blocks per SM) and pass 2 reads that part from there; rows that fit are
//    read from DRAM once. Bit-identical to kStreaming (same threads, same arithmetic).
//  - kSmemCacheWide: 1024 threads and one block per SM holding all the SM's shared memory (~220 KiB on sm_90):
//    more of a long row on chip; results equal kStreaming's up to float rounding (another reduction split).
// Rows narrower than 4096 classes take the streaming kernel on every path. (The former sm_90 thread-block-
// cluster path measured 2-4x slower on an H100 and was removed; its old value 2 now means kSmemCache.)
enum class RowPath : std::int32_t { kAuto = 0, kStreaming = 1, kSmemCache = 2, kSmemCacheWide = 3 };

// Floats of workspace the CE launchers need (row losses + the class-weight sums).
std::int64_t cross_entropy_workspace_floats(std::int64_t n);

// cross_entropy_forward: label-smoothing CE of logits [n, classes] (torch semantics, softmax_math.hpp).
// requires: labels of n int64 in [0, classes) (else that row is NaN); class_weights null or `classes`
//   floats >= 0; loss of n floats (reduction none) or 1; workspace of cross_entropy_workspace_floats(n).
// ensures: loss written (not accumulated); the reduction over rows is in row order (deterministic).
void cross_entropy_forward(const CrossEntropyShape& shape, const CrossEntropyConfig& cfg, const float* logits,
                           const std::int64_t* labels, const float* class_weights, float* loss, float* workspace,
                           Stream stream, RowPath path = RowPath::kAuto);
// cross_entropy_backward: grad_logits = d(Σ grad_loss·loss)/d(logits).
// requires: as the forward; grad_loss of n floats (none) or 1; grad_logits of n*classes floats.
// ensures: grad_logits written (not accumulated).
void cross_entropy_backward(const CrossEntropyShape& shape, const CrossEntropyConfig& cfg, const float* logits,
                            const std::int64_t* labels, const float* class_weights, const float* grad_loss,
                            float* grad_logits, float* workspace, Stream stream, RowPath path = RowPath::kAuto);

// arc_margin_forward: the composed path's first op, class logits from cosine logits [n, classes*K]:
//   logits[i,j] = s·max_k cos[i,j*K+k], and s·phi(c_iy) at the target (arc_margin_math.hpp).
// requires: a valid cfg (kernels::cpu::detail::arc_margin_validate rules); class_margins null or `classes`
//   floats; logits of n*classes floats. ensures: logits written.
void arc_margin_forward(const ArcMarginShape& shape, const ArcMarginConfig& cfg, const float* cos,
                        const std::int64_t* labels, const float* class_margins, float* logits, Stream stream);
// arc_margin_backward: grad_cos = d(Σ grad_logits·logits)/d(cos) (losing sub-centres get 0).
// requires: as arc_margin_forward; grad_logits of n*classes floats, grad_cos of n*classes*K.
void arc_margin_backward(const ArcMarginShape& shape, const ArcMarginConfig& cfg, const float* cos,
                         const std::int64_t* labels, const float* class_margins, const float* grad_logits,
                         float* grad_cos, Stream stream);

// arc_margin_cross_entropy_forward: the fused head. loss = cross_entropy(arc_margin(cos)) and, when grad_cos is
// non-null, grad_cos = d(loss)/d(cos) for a unit upstream gradient, with no logits matrix in memory.
// requires: the union of arc_margin_forward's and cross_entropy_forward's requirements; loss of n floats
//   (none) or 1; grad_cos null or n*classes*K floats; workspace of cross_entropy_workspace_floats(n).
// ensures: loss and grad_cos written (not accumulated); equal to the composed kernels up to rounding.
void arc_margin_cross_entropy_forward(const ArcMarginShape& shape, const ArcMarginConfig& arc_cfg,
                                      const CrossEntropyConfig& ce_cfg, const float* cos, const std::int64_t* labels,
                                      const float* class_margins, const float* class_weights, float* loss,
                                      float* grad_cos, float* workspace, Stream stream,
                                      RowPath path = RowPath::kAuto);
// arc_margin_cross_entropy_backward: grad_cos = d(Σ grad_loss·loss)/d(cos), recomputed from cos.
void arc_margin_cross_entropy_backward(const ArcMarginShape& shape, const ArcMarginConfig& arc_cfg,
                                       const CrossEntropyConfig& ce_cfg, const float* cos,
                                       const std::int64_t* labels, const float* class_margins,
                                       const float* class_weights, const float* grad_loss, float* grad_cos,
                                       float* workspace, Stream stream, RowPath path = RowPath::kAuto);

// ---- exact top-k search (kernels/cuda/search.cuh) ----------------------------------------------------

// The largest k topk_search supports.
inline constexpr std::int64_t kMaxTopk = 128;
enum class SearchMetric : std::int32_t { kInnerProduct = 0, kCosine = 1 };
// queries [nq, d] and gallery [ng, d] (row-major floats); the k best gallery rows per query. The score matrix
// is computed query_block x gallery_block at a time (the workspace), never whole.
struct TopkSearchShape {
  std::int64_t nq = 0, ng = 0, d = 0, k = 1;
  std::int64_t query_block = 1024;
  std::int64_t gallery_block = 16384;
};
// Floats of workspace topk_search needs: min(query_block, nq) * min(gallery_block, ng) + nq + ng.
std::int64_t topk_search_workspace_floats(const TopkSearchShape& shape);
// topk_search: for each query i, scores[i, 0..k) and indices[i, 0..k) = the k gallery rows with the highest
//   similarity (kInnerProduct: q·g; kCosine: q·g / (max(|q|, 1e-12) · max(|g|, 1e-12))), best first, ties
//   broken by the smaller gallery index (retrieval::FlatIndex's rule). One FP32 cuBLAS GEMM per block pair.
// requires: 1 <= k <= min(kMaxTopk, ng); ng, d < 2^31; query_block, gallery_block >= 1; scores [nq, k] floats,
//   indices [nq, k] int64, workspace of topk_search_workspace_floats(shape) floats.
// ensures: scores and indices written (not accumulated); deterministic; NaN scores are never selected, and a
//   query with fewer than k non-NaN scores gets (-inf, -1) in its missing slots.
void topk_search(const TopkSearchShape& shape, SearchMetric metric, const float* queries, const float* gallery,
                 float* scores, std::int64_t* indices, float* workspace, Stream stream);
// The GEMMs of topk_search alone (same blocks, same workspace, no selection): what the bench compares against.
void topk_search_gemm_only(const TopkSearchShape& shape, const float* queries, const float* gallery, float* workspace,
                           Stream stream);

// ---- mixed precision: gradient unscaling (kernels/cuda/amp.cuh) ---------------------------------------

// One gradient tensor: `count` floats, unscaled in place.
struct AmpTensor {
  float* data = nullptr;
  std::int64_t count = 0;
};
// amp_unscale: for every element of every tensor, g = g * (*inv_scale); when any g was inf or NaN before the
//   multiply, *found_inf = 1 (it is never cleared here: zero it once before the first call of a step).
// requires: tensors_host of tensor_count entries (count >= 0, data non-null when count > 0); inv_scale and
//   found_inf point at one device float each (device values, so a CUDA graph can capture the call).
// ensures: gradients scaled in place (non-finite ones stay non-finite); *found_inf set as above.
void amp_unscale(const AmpTensor* tensors_host, std::int64_t tensor_count, const float* inv_scale, float* found_inf,
                 Stream stream);

// ---- learning-rate schedule on the device (kernels/cuda/schedule.cuh) ------------------------------------

// schedule_lr_device: *lr = schedule_lr(*step / steps_per_unit, cfg); then ++*step when advance.
// requires: a config valid for kernels::cpu::validate_schedule; step points at one device int64 >= 0;
//   steps_per_unit >= 1 (1: t counts optimizer steps; the steps of an epoch: t counts epochs).
// ensures: *lr written (and *step incremented) by one device thread, so a captured graph replays it.
void schedule_lr_device(const ScheduleConfig& cfg, std::int64_t* step, std::int64_t steps_per_unit, bool advance,
                        float* lr, Stream stream);
// schedule_lr_many: lr[i] = schedule_lr(t[i], cfg) for count times (double), e.g. a whole run's curve.
void schedule_lr_many(const ScheduleConfig& cfg, const double* t, std::int64_t count, double* lr, Stream stream);

// ---- fused optimizer steps (kernels/cuda/optim.cuh) --------------------------------------------------

// One parameter tensor of a multi-tensor step: flat arrays of `count` floats (state buffers may be null
// where the config does not use them).
struct OptimTensor {
  float* param = nullptr;
  const float* grad = nullptr;
  float* buf0 = nullptr;  // SGD: momentum buffer; AdamW: exp_avg
  float* buf1 = nullptr;  // AdamW: exp_avg_sq
  float* buf2 = nullptr;  // AdamW: max_exp_avg_sq (amsgrad)
  std::int64_t count = 0;
};

// One parameter of a multi-tensor AGC: `units` rows of `unit_size` floats (rows = output units of a weight; one row
// holding the whole tensor for vectors and scalars, as kernels::cpu::agc_clip).
struct AgcTensor {
  const float* param = nullptr;
  float* grad = nullptr;
  std::int64_t units = 0;
  std::int64_t unit_size = 1;
};

// agc_clip: Adaptive Gradient Clipping of every tensor's gradient in place, unit by unit (optim_math.hpp
// agc_scale, norms summed in float). requires: clip_factor > 0, eps >= 0 (finite); unit_size >= 1.
// ensures: rows under the bound untouched; params untouched.
void agc_clip(const AgcTensor* tensors_host, std::int64_t tensor_count, const AgcConfig& cfg, Stream stream);

// sgd_step: one SGD (optionally Nesterov) update of every tensor, in place, PyTorch semantics
// (optim_math.hpp sgd_update). lr_device, when non-null, points at one device float that replaces cfg.lr
// (the schedule's output). requires: validate_sgd(cfg); buf0 of count floats when momentum > 0.
// ensures: params (and momentum buffers) updated in place; grads untouched.
void sgd_step(const OptimTensor* tensors_host, std::int64_t tensor_count, const SgdConfig& cfg, bool first_step,
              const float* lr_device, Stream stream);
// adamw_step: one AdamW update of every tensor, in place (adamw_update). step >= 1 is the update count.
// requires: validate_adamw(cfg); buf0, buf1 (and buf2 iff amsgrad) of count floats.
void adamw_step(const OptimTensor* tensors_host, std::int64_t tensor_count, const AdamWConfig& cfg,
                std::int64_t step, const float* lr_device, Stream stream);

}  // namespace arclight::kernels::cuda
