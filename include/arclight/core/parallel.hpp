// Threading: OpenMP for arclight's own loops and its GEMMs; OpenBLAS runs single-threaded inside them.
// parallel_for splits [begin, end) into contiguous chunks of at least `grain` iterations; below one grain
// it runs inline so small tensors pay no thread start-up.
#pragma once

#include <algorithm>
#include <cstdint>

#include <omp.h>

extern "C" void openblas_set_num_threads(int);

namespace arclight {

inline int num_threads() { return omp_get_max_threads(); }

// Sets the number of threads used by arclight's loops, GEMMs included: BLAS itself stays single-threaded and
// kernels/cpu/gemm.hpp splits large products across the OpenMP threads (one thread pool, not two taking turns).
inline void set_num_threads(int n) {
  n = std::max(1, n);
  omp_set_num_threads(n);
  openblas_set_num_threads(1);
}

// Calls f(chunk_begin, chunk_end) on disjoint chunks covering [begin, end), in parallel when the range
// holds more than one grain. f must not throw (errors are validated before kernels run).
template <typename F>
void parallel_for(std::int64_t begin, std::int64_t end, std::int64_t grain, F&& f) {
  const std::int64_t n = end - begin;
  if (n <= 0) return;
  const int max_threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const std::int64_t want = std::min<std::int64_t>(max_threads, (n + grain - 1) / std::max<std::int64_t>(grain, 1));
  if (want <= 1) {
    f(begin, end);
    return;
  }
#pragma omp parallel num_threads(static_cast<int>(want))
  {
    const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const std::int64_t chunk = (n + nt - 1) / nt;
    const std::int64_t b = begin + t * chunk, e = std::min(end, b + chunk);
    if (b < e) f(b, e);
  }
}

}  // namespace arclight
