// GEMM on the CPU through CBLAS (OpenBLAS). Row-major C = alpha·op(A)·op(B) + beta·C where op is an
// optional transpose; transposed operands are passed to BLAS as flags with their leading dimension, never
// copied. Templated on float/double so the framework's f64 gradcheck runs the same path.
#pragma once

#include <cstdint>

#include <cblas.h>
#include <omp.h>

extern "C" int openblas_get_num_threads(void);
extern "C" void openblas_set_num_threads(int);

namespace arclight::kernels::cpu {

struct GemmShape {
  std::int64_t m = 0, n = 0, k = 0;  // C is m×n, op(A) is m×k, op(B) is k×n
  bool trans_a = false, trans_b = false;
  std::int64_t lda = 0, ldb = 0, ldc = 0;
};

// Below this many flops a product runs on one thread (splitting costs more than it saves).
inline constexpr double kGemmSplitFlops = 4.0e6;

namespace detail {
// arclight keeps OpenBLAS single-threaded and parallelises with its own OpenMP threads only: two thread pools
// (OpenMP's and OpenBLAS's) on the same cores take turns and busy-wait against each other — measured 2x slower
// training steps on 2 cores without OMP_WAIT_POLICY=passive (bench/RESULTS.md, "CPU train step"). Called by
// every gemm; process-wide (OpenBLAS has no per-call thread count).
inline void blas_single_threaded() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

template <typename T>
void blas_gemm(const GemmShape& s, T alpha, const T* a, const T* b, T beta, T* c) {
  const auto ta = s.trans_a ? CblasTrans : CblasNoTrans, tb = s.trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (sizeof(T) == 4)
    cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(s.m), static_cast<int>(s.n), static_cast<int>(s.k), alpha, a,
                static_cast<int>(s.lda), b, static_cast<int>(s.ldb), beta, c, static_cast<int>(s.ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, static_cast<int>(s.m), static_cast<int>(s.n), static_cast<int>(s.k), alpha, a,
                static_cast<int>(s.lda), b, static_cast<int>(s.ldb), beta, c, static_cast<int>(s.ldc));
}
}  // namespace detail

// requires: leading dimensions consistent with the shape (checked by the op that builds GemmShape);
// C is overwritten when beta == 0 (its old contents, even NaN, are ignored), else accumulated into.
template <typename T>
void gemm(const GemmShape& s, T alpha, const T* a, const T* b, T beta, T* c) {
  if (s.m == 0 || s.n == 0) return;
  if (s.k == 0) {  // BLAS may skip the beta scaling when k == 0; do it here
    for (std::int64_t i = 0; i < s.m; ++i)
      for (std::int64_t j = 0; j < s.n; ++j) c[i * s.ldc + j] = beta == T(0) ? T(0) : beta * c[i * s.ldc + j];
    return;
  }
  detail::blas_single_threaded();
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const double flops = 2.0 * double(s.m) * double(s.n) * double(s.k);
  if (threads < 2 || flops < kGemmSplitFlops || (s.m < 2 * threads && s.n < 2 * threads)) {
    detail::blas_gemm<T>(s, alpha, a, b, beta, c);
    return;
  }
  // One single-threaded GEMM per OpenMP thread on a contiguous slice of C's columns (or rows, when C is
  // taller than wide). Every element is computed by the same sequential K loop as without the split.
  const bool split_n = s.n >= s.m;
  const std::int64_t extent = split_n ? s.n : s.m;
#pragma omp parallel num_threads(threads)
  {
    const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const std::int64_t lo = extent * t / nt, hi = extent * (t + 1) / nt;
    if (lo < hi) {
      GemmShape part = s;
      if (split_n) {
        part.n = hi - lo;
        detail::blas_gemm<T>(part, alpha, a, s.trans_b ? b + lo * s.ldb : b + lo, beta, c + lo);
      } else {
        part.m = hi - lo;
        detail::blas_gemm<T>(part, alpha, s.trans_a ? a + lo : a + lo * s.lda, b, beta, c + lo * s.ldc);
      }
    }
  }
}

// The same with the BLAS-style argument list: C[m,n] = alpha·op(A)·op(B) + beta·C (row-major).
template <typename T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "gemm: float or double only");
  gemm<T>(GemmShape{m, n, k, trans_a, trans_b, lda, ldb, ldc}, alpha, a, b, beta, c);
}

// Sets OpenBLAS to one thread while alive (when `active`) and restores the previous count. OpenBLAS keeps its
// own thread pool next to OpenMP's; when many independent GEMMs are due (one per image, one per search block)
// it is faster to run them on OpenMP's threads with a single-threaded BLAS each than to let the two pools take
// turns on the same cores. Process-wide while it lasts (OpenBLAS has no per-call thread count).
class SingleThreadedBlas {
 public:
  explicit SingleThreadedBlas(bool active) : active_(active), saved_(active ? openblas_get_num_threads() : 1) {
    if (active_) openblas_set_num_threads(1);
  }
  ~SingleThreadedBlas() {
    if (active_) openblas_set_num_threads(saved_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  bool active_;
  int saved_;
};

// Whether gemm_tasks would run its tasks on several threads.
inline bool gemm_tasks_parallel(std::int64_t count) {
  return count >= 2 && !omp_in_parallel() && omp_get_max_threads() >= 2;
}

// Runs f(i) for i in [0, count): independent tasks that each call gemm (and whatever else they need on their
// own data). With two or more OpenMP threads the tasks are spread over them (static schedule) and BLAS is
// single-threaded meanwhile; otherwise they run in order on the caller with BLAS as configured.
// requires: f(i) and f(j) write disjoint memory for i != j; f does not throw.
template <typename F>
void gemm_tasks(std::int64_t count, F&& f) {
  if (!gemm_tasks_parallel(count)) {
    for (std::int64_t i = 0; i < count; ++i) f(i);
    return;
  }
  SingleThreadedBlas one(true);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < count; ++i) f(i);
}

}  // namespace arclight::kernels::cpu
