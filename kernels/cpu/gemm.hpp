// GEMM on the CPU through CBLAS (OpenBLAS). Row-major C = alpha·op(A)·op(B) + beta·C where op is an
// optional transpose; transposed operands are passed to BLAS as flags with their leading dimension, never
// copied. Templated on float/double so the framework's f64 gradcheck runs the same path.
#pragma once

#include <cstdint>

#include <cblas.h>

namespace arclight::kernels::cpu {

struct GemmShape {
  std::int64_t m = 0, n = 0, k = 0;  // C is m×n, op(A) is m×k, op(B) is k×n
  bool trans_a = false, trans_b = false;
  std::int64_t lda = 0, ldb = 0, ldc = 0;
};

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
  const auto ta = s.trans_a ? CblasTrans : CblasNoTrans, tb = s.trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (sizeof(T) == 4)
    cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(s.m), static_cast<int>(s.n), static_cast<int>(s.k), alpha, a,
                static_cast<int>(s.lda), b, static_cast<int>(s.ldb), beta, c, static_cast<int>(s.ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, static_cast<int>(s.m), static_cast<int>(s.n), static_cast<int>(s.k), alpha, a,
                static_cast<int>(s.lda), b, static_cast<int>(s.ldb), beta, c, static_cast<int>(s.ldc));
}

// The same with the BLAS-style argument list: C[m,n] = alpha·op(A)·op(B) + beta·C (row-major).
template <typename T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "gemm: float or double only");
  gemm<T>(GemmShape{m, n, k, trans_a, trans_b, lda, ldb, ldc}, alpha, a, b, beta, c);
}

}  // namespace arclight::kernels::cpu
