// Version and backend information, for `--version` output and log lines: which backend this build and
// this machine will use is always stated, never silently chosen.
#pragma once

#include <string>

#include "arclight/core/error.hpp"
#include "arclight/core/parallel.hpp"

#ifndef ARCLIGHT_VERSION
#define ARCLIGHT_VERSION "0.1.0"
#endif

namespace arclight {

inline const char* version() { return ARCLIGHT_VERSION; }

// True when this build was compiled with the CUDA backend.
constexpr bool built_with_cuda() {
#ifdef ARCLIGHT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// One line naming the compiled-in backends and the thread count.
inline std::string backend_info() {
  return str_cat("arclight ", version(), " | backend: CPU (OpenMP threads: ", num_threads(), ", BLAS: OpenBLAS)",
                 built_with_cuda() ? " + CUDA compiled in" : " | CUDA: not compiled in");
}

}  // namespace arclight
