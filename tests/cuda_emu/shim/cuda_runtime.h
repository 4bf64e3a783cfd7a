// The test-only stand-in for <cuda_runtime.h> of tests/cuda_emu: runs CUDA __global__ kernels on the CPU.
// Blocks run one after another; inside a block, kernels that (transitively) use __syncthreads or warp shuffles
// run every thread as a fiber (hand-written x86-64 context switch), the others run thread after thread.
// Launches are serialised by a global mutex.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
// The read-only cache load is a plain load here.
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidConfiguration = 9 };
inline cudaError_t& emu_last_error() {
  static cudaError_t e = cudaSuccess;
  return e;
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu_last_error();
  emu_last_error() = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : "cudaErrorInvalidConfiguration";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "invalid configuration argument";
}
inline dim3 threadIdx(0, 0, 0), blockIdx(0, 0, 0), blockDim, gridDim;

#define __align__(n) __attribute__((aligned(n)))

// Device intrinsics: the fast-math forms as their exact host counterparts (the tests' tolerances cover both).
inline float __expf(float x) { return std::exp(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __float2int_rz(float x) { return int(std::trunc(x)); }
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}

// The runtime calls the launchers make, on an emulated device with an H100's shared-memory limits. Copies and sets
// are synchronous (device memory is host memory), so every stream is always idle.
enum cudaMemcpyKind { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
                      cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4 };
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind, cudaStream_t = nullptr) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t = nullptr) {
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
                      cudaDevAttrReservedSharedMemoryPerBlock = 111, cudaDevAttrMultiProcessorCount = 16 };
namespace emu {
constexpr int kSmemPerSm = 228 * 1024, kSmemOptin = 227 * 1024, kSmemReserved = 1024, kSmemStaticReported = 1024;
}  // namespace emu
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = emu::kSmemPerSm; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = emu::kSmemOptin; break;
    case cudaDevAttrReservedSharedMemoryPerBlock: *value = emu::kSmemReserved; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
  }
  return cudaSuccess;
}
// Static shared memory is not known per kernel here; every kernel reports kSmemStaticReported bytes.
struct cudaFuncAttributes {
  std::size_t sharedSizeBytes = 0;
  int maxThreadsPerBlock = 1024;
};
template <typename F>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F*) {
  attr->sharedSizeBytes = emu::kSmemStaticReported;
  attr->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8, cudaFuncAttributePreferredSharedMemoryCarveout = 9 };
enum { cudaSharedmemCarveoutMaxShared = 100 };
namespace emu {
// Per kernel: the dynamic shared memory it opted into (cudaFuncSetAttribute), which launches may then use.
inline std::vector<std::pair<const void*, int>>& smem_optin() {
  static std::vector<std::pair<const void*, int>> v;
  return v;
}
inline int smem_limit(const void* kernel) {
  for (const auto& [k, bytes] : smem_optin())
    if (k == kernel) return bytes;
  return 48 * 1024;
}
}  // namespace emu
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (value < 0 || value + emu::kSmemStaticReported > emu::kSmemOptin) {
    std::fprintf(stderr, "EMU: cudaFuncSetAttribute(MaxDynamicSharedMemorySize, %d) exceeds the opt-in limit\n", value);
    return cudaErrorInvalidConfiguration;
  }
  const void* k = reinterpret_cast<const void*>(kernel);
  for (auto& e : emu::smem_optin())
    if (e.first == k) {
      e.second = value;
      return cudaSuccess;
    }
  emu::smem_optin().emplace_back(k, value);
  return cudaSuccess;
}
// Resident blocks per SM from the thread and shared-memory limits of an H100 (2048 threads, 32 blocks).
template <typename F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, F*, int threads, std::size_t dynamic_smem) {
  const int by_threads = threads > 0 ? 2048 / threads : 0;
  const std::size_t per_block = dynamic_smem + emu::kSmemStaticReported + emu::kSmemReserved;
  const int by_smem = int(std::size_t(emu::kSmemPerSm) / per_block);
  *blocks = std::min({by_threads, by_smem, 32});
  return cudaSuccess;
}

// CUDA's integer min / max overloads (the host has only std::min / std::max).
template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
inline T min(T a, T b) { return b < a ? b : a; }
template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
inline T max(T a, T b) { return a < b ? b : a; }

extern "C" void emu_ctx_switch(void** save_sp, void* load_sp);

namespace emu {

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;
  bool done = false;
  unsigned tid = 0;
};
constexpr std::size_t kStack = 1 << 17;
inline void* sched_sp = nullptr;
inline Fiber* cur = nullptr;
inline void (*body_fn)(void*) = nullptr;
inline void* body_arg = nullptr;
inline bool fiber_mode = false;
inline unsigned block_arrived = 0, block_gen = 0, live = 0;
inline unsigned warp_arrived[32], warp_gen[32];
inline unsigned char warp_buf[32][32][8];
inline std::uint64_t progress = 0;
inline std::recursive_mutex launch_mutex;

inline void yield() { emu_ctx_switch(&cur->sp, sched_sp); }

[[noreturn]] inline void fiber_entry() {
  body_fn(body_arg);
  cur->done = true;
  --live;
  ++progress;
  emu_ctx_switch(&cur->sp, sched_sp);
  std::abort();
}

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "EMU: %s (block %u,%u thread %u)\n", what, blockIdx.x, blockIdx.y, threadIdx.x);
  std::abort();
}

inline void syncthreads() {
  if (!fiber_mode) die("__syncthreads in a direct-mode kernel");
  const unsigned g = block_gen;
  ++progress;
  if (++block_arrived == live) {
    block_arrived = 0;
    ++block_gen;
    return;
  }
  while (block_gen == g) yield();
}
inline void warp_barrier(unsigned w) {
  const unsigned g = warp_gen[w];
  ++progress;
  if (++warp_arrived[w] == 32) {
    warp_arrived[w] = 0;
    ++warp_gen[w];
    return;
  }
  while (warp_gen[w] == g) yield();
}
// A full-mask shuffle: every lane of the warp must take part (checked: a missing lane deadlocks -> abort).
template <typename T>
T shuffle(T v, int src_kind, int o) {
  static_assert(sizeof(T) <= 8);
  if (!fiber_mode) die("warp shuffle in a direct-mode kernel");
  if (blockDim.x % 32 != 0) die("warp shuffle in a block that is not a whole number of warps");
  const unsigned t = threadIdx.x, w = t / 32, lane = t % 32;
  std::memcpy(warp_buf[w][lane], &v, sizeof(T));
  warp_barrier(w);
  unsigned src = lane;
  if (src_kind == 0) src = lane ^ unsigned(o);                        // xor
  else if (src_kind == 1) src = lane + unsigned(o) < 32 ? lane + o : lane;  // down
  else if (src_kind == 2) src = lane >= unsigned(o) ? lane - o : lane;       // up
  else src = unsigned(o) & 31u;                                         // idx
  T r;
  std::memcpy(&r, warp_buf[w][src], sizeof(T));
  warp_barrier(w);
  return r;
}

inline void run_block_fibers(unsigned n) {
  static std::vector<Fiber> fibers;
  if (fibers.size() < n) {
    const std::size_t old = fibers.size();
    fibers.resize(n);
    for (std::size_t t = old; t < n; ++t) fibers[t].stack = static_cast<char*>(std::aligned_alloc(64, kStack));
  }
  live = n;
  block_arrived = 0;
  std::memset(warp_arrived, 0, sizeof warp_arrived);
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = fibers[t];
    f.done = false;
    f.tid = t;
    auto top = reinterpret_cast<std::uintptr_t>(f.stack + kStack) & ~std::uintptr_t(15);
    void** s = reinterpret_cast<void**>(top);
    *--s = nullptr;                                       // fake return address of fiber_entry
    *--s = reinterpret_cast<void*>(&fiber_entry);         // popped by ret
    for (int r = 0; r < 6; ++r) *--s = nullptr;           // rbp rbx r12 r13 r14 r15
    f.sp = s;
  }
  // EMU_SCHED: forward (default), reverse or random order of the fibers in each round (races show up as
  // order-dependent results).
  static const int sched = [] {
    const char* e = std::getenv("EMU_SCHED");
    return !e ? 0 : (std::strcmp(e, "reverse") == 0 ? 1 : (std::strcmp(e, "random") == 0 ? 2 : 0));
  }();
  static std::uint64_t rng = 0x9E3779B97F4A7C15ull;
  static std::vector<unsigned> order;
  order.resize(n);
  int stall = 0;
  while (live > 0) {
    const std::uint64_t before = progress;
    for (unsigned t = 0; t < n; ++t) order[t] = sched == 1 ? n - 1 - t : t;
    if (sched == 2)
      for (unsigned t = n - 1; t > 0; --t) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        std::swap(order[t], order[rng % (t + 1)]);
      }
    for (unsigned oi = 0; oi < n; ++oi) {
      Fiber& f = fibers[order[oi]];
      if (f.done) continue;
      cur = &f;
      threadIdx = dim3(f.tid, 0, 0);
      emu_ctx_switch(&sched_sp, f.sp);
    }
    if (progress == before) {
      if (++stall > 2) {
        std::fprintf(stderr, "EMU: deadlock in block (%u,%u): live %u, block arrived %u\n", blockIdx.x, blockIdx.y,
                     live, block_arrived);
        std::abort();
      }
    } else {
      stall = 0;
    }
  }
}

struct Cfg {
  dim3 grid, block;
  std::size_t smem;
};
inline Cfg cfg(dim3 g, dim3 b, std::size_t smem = 0, cudaStream_t = nullptr) { return Cfg{g, b, smem}; }
inline std::uint64_t launches = 0;
// The launch's dynamic shared memory (`extern __shared__ T name[];` is rewritten by transform.py to a pointer to
// it), filled with NaN bytes at each block so a kernel that reads before writing shows it.
inline std::vector<unsigned char> dynamic_smem_bytes;
inline void* dynamic_smem = nullptr;

template <bool Fibers, typename K, typename... A>
void launch(Cfg c, const char* name, K kernel, A... args) {
  std::lock_guard<std::recursive_mutex> lock(launch_mutex);
  ++launches;
  static const bool trace = std::getenv("EMU_TRACE") != nullptr;
  if (trace)
    std::fprintf(stderr, "EMU launch %s%s grid (%u,%u,%u) block (%u,%u,%u)\n", name, Fibers ? " [fibers]" : "",
                 c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z);
  // CUDA's launch limits: a bad configuration is reported through cudaGetLastError, as on a GPU.
  const unsigned long threads = std::uint64_t(c.block.x) * c.block.y * c.block.z;
  if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.y > 65535 || c.grid.z > 65535 || threads == 0 ||
      threads > 1024 || c.smem > std::size_t(smem_limit(reinterpret_cast<const void*>(kernel)))) {
    std::fprintf(stderr, "EMU: invalid launch configuration of %s: grid (%u,%u,%u) block (%u,%u,%u) smem %zu\n", name,
                 c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z, c.smem);
    emu_last_error() = cudaErrorInvalidConfiguration;
    return;
  }
  if (c.block.y != 1 || c.block.z != 1 || c.grid.z != 1) die("only 1-D blocks and 2-D grids are emulated");
  gridDim = c.grid;
  blockDim = c.block;
  dynamic_smem_bytes.assign(c.smem + 16, 0xFF);
  dynamic_smem = reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(dynamic_smem_bytes.data()) + 15) & ~std::uintptr_t(15));
  auto call = [&] { kernel(args...); };
  for (unsigned by = 0; by < c.grid.y; ++by)
    for (unsigned bx = 0; bx < c.grid.x; ++bx) {
      blockIdx = dim3(bx, by, 0);
      if (c.smem > 0) std::memset(dynamic_smem, 0xFF, c.smem);
      if constexpr (!Fibers) {
        fiber_mode = false;
        for (unsigned t = 0; t < c.block.x; ++t) {
          threadIdx = dim3(t, 0, 0);
          call();
        }
      } else {
        fiber_mode = true;
        body_fn = [](void* p) { (*static_cast<decltype(call)*>(p))(); };
        body_arg = &call;
        run_block_fibers(c.block.x);
        fiber_mode = false;
      }
    }
  threadIdx = dim3(0, 0, 0);
  blockIdx = dim3(0, 0, 0);
}
}  // namespace emu

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int o) {
  if (mask != 0xffffffffu) emu::die("partial shuffle mask not emulated");
  return emu::shuffle(v, 0, o);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned o) {
  if (mask != 0xffffffffu) emu::die("partial shuffle mask not emulated");
  return emu::shuffle(v, 1, int(o));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned o) {
  if (mask != 0xffffffffu) emu::die("partial shuffle mask not emulated");
  return emu::shuffle(v, 2, int(o));
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src) {
  if (mask != 0xffffffffu) emu::die("partial shuffle mask not emulated");
  return emu::shuffle(v, 3, src);
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier(threadIdx.x / 32); }
inline void __syncthreads() { emu::syncthreads(); }
// A barrier that also counts the threads whose predicate is non-zero. Fibers run one at a time, so the count is a
// plain shared integer; the extra barriers keep one call's count and reset apart from the next call's.
inline int __syncthreads_count(int predicate) {
  static int acc = 0;
  if (predicate) ++acc;
  emu::syncthreads();
  const int total = acc;
  emu::syncthreads();
  if (threadIdx.x == 0) acc = 0;
  emu::syncthreads();
  return total;
}
// Atomics: fibers never interleave inside a call, so a read-modify-write is atomic here.
template <typename T>
inline T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
// The streaming (evict-first) load is a plain load here.
template <typename T>
inline T __ldcs(const T* p) {
  return *p;
}
