# Locates the CBLAS header that belongs to the BLAS found by find_package(BLAS) (OpenBLAS on Debian keeps
# cblas.h under the multiarch include directory). Sets ARCLIGHT_CBLAS_INCLUDE_DIR.
find_path(ARCLIGHT_CBLAS_INCLUDE_DIR cblas.h
  PATHS /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu /usr/include/openblas /usr/include
  PATH_SUFFIXES openblas-pthread openblas)
if(NOT ARCLIGHT_CBLAS_INCLUDE_DIR)
  message(FATAL_ERROR "arclight: cblas.h not found; install libopenblas-dev (scripts/setup.sh does)")
endif()
