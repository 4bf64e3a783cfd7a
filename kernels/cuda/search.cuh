// Exact top-k search on the GPU: for queries [nq, d] against a gallery [ng, d], the k best gallery rows of each
// query by inner product or cosine similarity. The CPU twin is include/arclight/retrieval/flat_index.hpp, and
// the result rule is the same: best score first, ties broken by the smaller gallery index.
//
// The nq x ng score matrix is never materialised. Queries go in blocks of query_block rows and the gallery in
// blocks of gallery_block rows; for each pair one cuBLAS SGEMM (plain FP32, no TF32) writes the block's scores
// into the caller's workspace, then topk_block_kernel (one thread block per query) merges that score row into
// the query's running top-k, which lives in the output arrays themselves between gallery blocks. Selection is
// threshold filtering: a thread block keeps the current k best (sorted) and, in shared memory, a buffer of
// candidates that beat the k-th best score; the row is read once, 1024 scores per round, and when the buffer
// could overflow on the next round it is merged (bitonic sort of the buffer, keep the first k, the new k-th
// score is the threshold). On data without adversarial ordering few scores beat the threshold after the first
// merges, so the kernel is a single read of the score block. Because every score read after a merge has a
// larger gallery index than everything already kept, a candidate that merely equals the threshold can never
// win its tie and is skipped (strict >). The sort key (score desc, index asc) is a total order, so the result
// does not depend on the order shared-memory atomics append candidates in: the search is deterministic.
// Cosine: scores are dot(q, g) · (1 / max(|q|, eps)) · (1 / max(|g|, eps)) with eps = 1e-12 (l2_normalize's
// default); the inverse norms are computed once per search into the workspace.
// NaN scores are never selected; a query with fewer than k non-NaN scores gets score -inf and index -1 in its
// missing slots.
// cuBLAS: one handle per device, created on first use and kept for the process (never destroyed: its teardown
// at exit could run after the CUDA runtime's); calls on one device are serialised by a mutex because the handle
// is bound to the caller's stream for the duration of the search.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <mutex>

#include "kernels/cuda/common.cuh"

namespace arclight::kernels::cuda {

namespace search_detail {

constexpr int kTopkThreads = 256;
constexpr int kTopkPerThread = 4;
constexpr int kTopkRound = kTopkThreads * kTopkPerThread;  // scores read per round
constexpr int kTopkCap = 2 * kTopkRound;                   // candidate buffer (>= kMaxTopk + one round)
constexpr int kMaxHandles = 16;
static_assert(kTopkCap - kTopkRound >= kMaxTopk, "the kept k best must fit beside one round of candidates");

inline void check_cublas(cublasStatus_t st, const char* op, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) ::arclight::fail(op, what, " failed: ", cublasGetStatusName(st), ": ", cublasGetStatusString(st));
}

// The device's cuBLAS handle and the mutex that serialises its use. requires: device < kMaxHandles.
struct BlasSlot {
  std::mutex mu;
  cublasHandle_t handle = nullptr;
};
inline BlasSlot& blas_slot(int device, const char* op) {
  ARCLIGHT_CHECK(device >= 0 && device < kMaxHandles, op, "device ", device, " is beyond the ", kMaxHandles,
                 " devices the search supports");
  static BlasSlot* slots = new BlasSlot[kMaxHandles];  // never destroyed (see the file comment)
  return slots[device];
}

// a ranks before b: higher score, then lower gallery index.
__device__ __forceinline__ bool topk_better(float ka, int ia, float kb, int ib) {
  return ka > kb || (ka == kb && ia < ib);
}

// Sorts key/idx[0, *count) best-first (bitonic over the next power of two, padded with (-inf, INT_MAX) which
// ranks after every real entry), keeps the first min(count, k) and sets the threshold state. Called by the whole
// block (uniform control flow); starts and ends with a barrier.
__device__ void topk_merge(float* key, int* idx, int* s_count, float* s_thr, int* s_full, int k) {
  __syncthreads();
  const int count = *s_count;
  int p = 1;
  while (p < count) p <<= 1;
  for (int i = count + int(threadIdx.x); i < p; i += blockDim.x) {
    key[i] = -INFINITY;
    idx[i] = INT_MAX;
  }
  __syncthreads();
  for (int size = 2; size <= p; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < (p >> 1); i += blockDim.x) {
        const int lo = (i / stride) * 2 * stride + (i % stride);
        const int hi = lo + stride;
        const bool better_first = (lo & size) == 0;
        const float kl = key[lo], kh = key[hi];
        const int il = idx[lo], ih = idx[hi];
        if (topk_better(kh, ih, kl, il) == better_first) {
          key[lo] = kh;
          key[hi] = kl;
          idx[lo] = ih;
          idx[hi] = il;
        }
      }
      __syncthreads();
    }
  }
  if (threadIdx.x == 0) {
    const int kept = count < k ? count : k;
    *s_count = kept;
    *s_full = kept == k ? 1 : 0;
    *s_thr = kept == k ? key[k - 1] : -INFINITY;
  }
  __syncthreads();
}

struct TopkBlockParams {
  const float* scores = nullptr;  // [mq, nb], row-major
  const float* q_inv = nullptr;   // [mq] inverse query norms (cosine) or null
  const float* g_inv = nullptr;   // [nb] inverse gallery norms (cosine) or null
  float* out_scores = nullptr;    // [mq, k]: the running top-k of this query block
  std::int64_t* out_idx = nullptr;
  std::int64_t nb = 0, g0 = 0;
  int k = 0;
  int first = 1;  // the first gallery block: no running state to load
};

__global__ void __launch_bounds__(kTopkThreads) topk_block_kernel(TopkBlockParams P) {
  __shared__ float key[kTopkCap];
  __shared__ int idx[kTopkCap];
  __shared__ int s_count, s_full;
  __shared__ float s_thr;
  const std::int64_t q = blockIdx.x;
  const int k = P.k;
  float* __restrict__ os = P.out_scores + q * k;
  std::int64_t* __restrict__ oi = P.out_idx + q * k;
  // Running state: the valid entries are a sorted prefix (index >= 0), then (-inf, -1) padding.
  int valid = 0;
  if (!P.first && int(threadIdx.x) < k) {
    const std::int64_t ix = oi[threadIdx.x];
    if (ix >= 0) {
      key[threadIdx.x] = os[threadIdx.x];
      idx[threadIdx.x] = int(ix);
      valid = 1;
    }
  }
  const int count0 = __syncthreads_count(valid);
  if (threadIdx.x == 0) {
    s_count = count0;
    s_full = count0 == k ? 1 : 0;
    s_thr = count0 == k ? key[k - 1] : -INFINITY;
  }
  __syncthreads();
  const float* __restrict__ row = P.scores + q * P.nb;
  const float qs = P.q_inv != nullptr ? P.q_inv[q] : 1.f;
  for (std::int64_t base = 0; base < P.nb; base += kTopkRound) {
    const float thr = s_thr;
    const int full = s_full;
#pragma unroll
    for (int u = 0; u < kTopkPerThread; ++u) {
      const std::int64_t j = base + threadIdx.x + std::int64_t(u) * kTopkThreads;
      if (j < P.nb) {
        float s = __ldcs(row + j);
        if (P.g_inv != nullptr) s = s * qs * __ldg(P.g_inv + j);
        if (full ? s > thr : s == s) {
          const int pos = atomicAdd(&s_count, 1);
          key[pos] = s;
          idx[pos] = int(P.g0 + j);
        }
      }
    }
    __syncthreads();
    // Every thread reads the count before any thread appends again (the barrier), so the merge decision is
    // uniform. Before a round at most kTopkCap - kTopkRound entries are held: a round cannot overflow the buffer.
    const int held = s_count;
    __syncthreads();
    if (held > kTopkCap - kTopkRound) topk_merge(key, idx, &s_count, &s_thr, &s_full, k);
  }
  topk_merge(key, idx, &s_count, &s_thr, &s_full, k);
  const int kept = s_count;
  for (int t = threadIdx.x; t < k; t += blockDim.x) {
    os[t] = t < kept ? key[t] : -INFINITY;
    oi[t] = t < kept ? std::int64_t(idx[t]) : -1;
  }
}

// inv[r] = 1 / max(sqrt(Σ_c x[r, c]^2), eps) for `rows` rows of width d; one warp per row, fixed-order sums.
__global__ void inverse_norms_kernel(const float* __restrict__ x, std::int64_t rows, std::int64_t d, float eps,
                                     float* __restrict__ inv) {
  const std::int64_t warp = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= rows) return;
  const float* __restrict__ r = x + warp * d;
  float acc = 0.f;
  for (std::int64_t c = lane; c < d; c += 32) {
    const float v = __ldg(r + c);
    acc = fmaf(v, v, acc);
  }
  acc = detail::warp_sum(acc);
  if (lane == 0) inv[warp] = 1.f / fmaxf(sqrtf(acc), eps);
}

inline void launch_inverse_norms(const float* x, std::int64_t rows, std::int64_t d, float* inv, Stream stream,
                                 const char* op) {
  if (rows == 0) return;
  constexpr int threads = 256;  // 8 rows per block
  const std::int64_t blocks = detail::ceil_div(rows, threads / 32);
  inverse_norms_kernel<<<unsigned(blocks), threads, 0, stream>>>(x, rows, d, 1e-12f, inv);
  detail::check_launch(op);
}

// Binds the device's handle to `stream` and holds its mutex until destroyed.
class BlasLease {
 public:
  BlasLease(Stream stream, const char* op) {
    int device = 0;
    detail::check_cuda(cudaGetDevice(&device), op, "cudaGetDevice");
    BlasSlot& slot = blas_slot(device, op);
    lock_ = std::unique_lock<std::mutex>(slot.mu);
    if (slot.handle == nullptr) {
      check_cublas(cublasCreate(&slot.handle), op, "cublasCreate");
      check_cublas(cublasSetMathMode(slot.handle, CUBLAS_DEFAULT_MATH), op, "cublasSetMathMode");
    }
    check_cublas(cublasSetStream(slot.handle, stream), op, "cublasSetStream");
    handle_ = slot.handle;
  }
  cublasHandle_t handle() const { return handle_; }

 private:
  std::unique_lock<std::mutex> lock_;
  cublasHandle_t handle_ = nullptr;
};

// Row-major S[mq, nb] = Q[mq, d] · G[nb, d]^T, which is column-major S^T[nb, mq] = op_T(G) · Q: cuBLAS sees the
// gallery block as a d x nb column-major matrix (transposed) and the query block as d x mq.
inline void block_scores_gemm(const BlasLease& blas, const float* q, std::int64_t mq, const float* g, std::int64_t nb,
                              std::int64_t d, float* out, const char* op) {
  const float one = 1.f, zero = 0.f;
  check_cublas(cublasSgemm(blas.handle(), CUBLAS_OP_T, CUBLAS_OP_N, int(nb), int(mq), int(d), &one, g, int(d), q,
                           int(d), &zero, out, int(nb)),
               op, "cublasSgemm");
}

inline std::int64_t clamp_block(std::int64_t want, std::int64_t n) { return want < n ? want : n; }

}  // namespace search_detail

std::int64_t topk_search_workspace_floats(const TopkSearchShape& s) {
  const std::int64_t qb = search_detail::clamp_block(s.query_block, s.nq > 0 ? s.nq : 1);
  const std::int64_t gb = search_detail::clamp_block(s.gallery_block, s.ng > 0 ? s.ng : 1);
  return qb * gb + s.nq + s.ng;  // score block + inverse norms (cosine)
}

void topk_search(const TopkSearchShape& s, SearchMetric metric, const float* queries, const float* gallery,
                 float* scores, std::int64_t* indices, float* workspace, Stream stream) {
  const char* op = "cuda::topk_search";
  ARCLIGHT_CHECK(s.nq >= 0 && s.ng >= 1 && s.d >= 1, op, "expected nq >= 0, ng >= 1 and d >= 1, got nq=", s.nq,
                 " ng=", s.ng, " d=", s.d);
  ARCLIGHT_CHECK(s.k >= 1 && s.k <= kMaxTopk && s.k <= s.ng, op, "expected 1 <= k <= min(", kMaxTopk,
                 ", ng=", s.ng, "), got k=", s.k);
  ARCLIGHT_CHECK(s.query_block >= 1 && s.gallery_block >= 1, op, "expected query_block >= 1 and gallery_block >= 1, got ",
                 s.query_block, " and ", s.gallery_block);
  ARCLIGHT_CHECK(s.ng <= INT_MAX && s.d <= INT_MAX, op, "expected ng and d below 2^31 (int gallery indices, "
                 "cuBLAS sizes), got ng=", s.ng, " d=", s.d);
  ARCLIGHT_CHECK(metric == SearchMetric::kInnerProduct || metric == SearchMetric::kCosine, op, "unknown metric ",
                 int(metric), " (expected kInnerProduct or kCosine)");
  const std::int64_t qb = search_detail::clamp_block(s.query_block, s.nq > 0 ? s.nq : 1);
  const std::int64_t gb = search_detail::clamp_block(s.gallery_block, s.ng);
  ARCLIGHT_CHECK(qb <= INT_MAX && gb <= INT_MAX && qb * gb <= (std::int64_t(1) << 40), op,
                 "block sizes too large: query_block=", qb, " gallery_block=", gb);
  if (s.nq == 0) return;
  ARCLIGHT_CHECK(queries != nullptr && gallery != nullptr && scores != nullptr && indices != nullptr, op,
                 "expected non-null queries, gallery, scores and indices");
  ARCLIGHT_CHECK(workspace != nullptr, op, "expected a workspace of ", topk_search_workspace_floats(s),
                 " floats, got null");
  float* block_scores = workspace;
  float* q_inv = nullptr;
  float* g_inv = nullptr;
  if (metric == SearchMetric::kCosine) {
    q_inv = workspace + qb * gb;
    g_inv = q_inv + s.nq;
    search_detail::launch_inverse_norms(queries, s.nq, s.d, q_inv, stream, op);
    search_detail::launch_inverse_norms(gallery, s.ng, s.d, g_inv, stream, op);
  }
  const search_detail::BlasLease blas(stream, op);
  for (std::int64_t q0 = 0; q0 < s.nq; q0 += qb) {
    const std::int64_t mq = search_detail::clamp_block(qb, s.nq - q0);
    for (std::int64_t g0 = 0; g0 < s.ng; g0 += gb) {
      const std::int64_t nb = search_detail::clamp_block(gb, s.ng - g0);
      search_detail::block_scores_gemm(blas, queries + q0 * s.d, mq, gallery + g0 * s.d, nb, s.d, block_scores, op);
      search_detail::TopkBlockParams P;
      P.scores = block_scores;
      P.q_inv = q_inv != nullptr ? q_inv + q0 : nullptr;
      P.g_inv = g_inv != nullptr ? g_inv + g0 : nullptr;
      P.out_scores = scores + q0 * s.k;
      P.out_idx = indices + q0 * s.k;
      P.nb = nb;
      P.g0 = g0;
      P.k = int(s.k);
      P.first = g0 == 0 ? 1 : 0;
      search_detail::topk_block_kernel<<<unsigned(mq), search_detail::kTopkThreads, 0, stream>>>(P);
      detail::check_launch(op);
    }
  }
}

void topk_search_gemm_only(const TopkSearchShape& s, const float* queries, const float* gallery, float* workspace,
                           Stream stream) {
  const char* op = "cuda::topk_search_gemm_only";
  ARCLIGHT_CHECK(s.nq >= 1 && s.ng >= 1 && s.d >= 1 && s.d <= INT_MAX && s.query_block >= 1 && s.gallery_block >= 1,
                 op, "expected nq, ng, d, query_block, gallery_block >= 1 (d < 2^31), got nq=", s.nq, " ng=", s.ng,
                 " d=", s.d, " query_block=", s.query_block, " gallery_block=", s.gallery_block);
  ARCLIGHT_CHECK(queries != nullptr && gallery != nullptr && workspace != nullptr, op,
                 "expected non-null queries, gallery and workspace");
  const std::int64_t qb = search_detail::clamp_block(s.query_block, s.nq);
  const std::int64_t gb = search_detail::clamp_block(s.gallery_block, s.ng);
  ARCLIGHT_CHECK(qb <= INT_MAX && gb <= INT_MAX, op, "block sizes too large");
  const search_detail::BlasLease blas(stream, op);
  for (std::int64_t q0 = 0; q0 < s.nq; q0 += qb) {
    const std::int64_t mq = search_detail::clamp_block(qb, s.nq - q0);
    for (std::int64_t g0 = 0; g0 < s.ng; g0 += gb) {
      const std::int64_t nb = search_detail::clamp_block(gb, s.ng - g0);
      search_detail::block_scores_gemm(blas, queries + q0 * s.d, mq, gallery + g0 * s.d, nb, s.d, workspace, op);
    }
  }
}

}  // namespace arclight::kernels::cuda
