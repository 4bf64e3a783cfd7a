// The caching allocators of the CUDA backend: device memory for tensors and workspaces, and page-locked
// (pinned) host memory for the data loader's staging buffers. Both work like the CPU allocator
// (core/allocator.hpp): a request is rounded up to a size class and a freed block goes into that class's free
// list instead of back to the driver, so a training loop that allocates the same shapes every step reaches a
// steady state with no cudaMalloc / cudaFree / cudaHostAlloc at all (those synchronise the device and cost
// tens of microseconds each). Stats count system allocations, cache hits, bytes in use and cached, and the
// peak; empty_cache() hands every cached block back.
//
// The caching logic is BasicCachingAllocator<Backend>, a plain C++ class whose backend supplies the system
// allocate/release, so the bin arithmetic and bookkeeping are unit-tested on machines without a GPU (with a
// malloc backend); device_allocator(i) and pinned_allocator() are its CUDA instances (only with
// ARCLIGHT_WITH_CUDA).
//
// Stream semantics: a freed device block may be handed out again at once, so all work on cached blocks must be
// ordered on ONE stream (arclight uses the legacy default stream for tensors); code that frees a block still in
// use on another stream must synchronise first. Pinned blocks are host memory: the caller must not free one
// while an asynchronous copy from or to it is in flight.
//
// This header is also what tensor storage uses (core/tensor.hpp): detail::storage_allocate / storage_free /
// copy_bytes compile in every build and, without the CUDA backend or a GPU, throw "<op>: CUDA device requested
// but <reason>". No CUDA header is included from here.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "arclight/core/device.hpp"
#include "arclight/core/error.hpp"
#include "arclight/cuda/runtime.hpp"

namespace arclight::cuda {

// Rounds a request of n bytes up to its size class: 0 stays 0 (no block); up to 4 KiB, multiples of 512 bytes
// (cudaMalloc's own granularity is 256-512 bytes); above, 8 classes per power of two, so at most 12.5% of a
// block is waste and a handful of classes cover a model's tensor sizes. Every class is a multiple of 512.
// requires: n <= 2^62 (larger requests are refused by the allocator before this is called).
constexpr std::size_t caching_size_class(std::size_t n) {
  constexpr std::size_t kSmall = 512;
  if (n == 0) return 0;
  if (n <= 4096) return (n + kSmall - 1) / kSmall * kSmall;
  const std::size_t step = std::bit_floor(n - 1) / 8;  // >= 512: a power of two
  return (n + step - 1) / step * step;
}

struct CachingAllocatorStats {
  std::uint64_t system_allocs = 0;  // backend allocations (cudaMalloc / cudaHostAlloc)
  std::uint64_t system_frees = 0;   // blocks returned to the backend
  std::uint64_t cache_hits = 0;     // requests served from the free lists
  std::uint64_t requests = 0;       // allocate() calls with n > 0
  std::uint64_t bytes_in_use = 0;   // held by live blocks (size-class rounded)
  std::uint64_t bytes_cached = 0;   // held in the free lists
  std::uint64_t peak_bytes_in_use = 0;
};

// The caching logic over a backend with
//   void* allocate(std::size_t bytes)      (never null for bytes > 0; throws arclight::Error on failure)
//   void release(void* p) noexcept
//   const char* name() const               ("cuda::device_allocator(0)", for error messages)
// Thread-safe. Never frees a block it did not allocate; cached blocks live until empty_cache() (the process-
// wide instances are never destroyed, see device_allocator()).
template <typename Backend>
class BasicCachingAllocator {
 public:
  static constexpr std::size_t kMaxRequest = std::size_t{1} << 62;

  explicit BasicCachingAllocator(Backend backend = Backend()) : backend_(std::move(backend)) {}
  BasicCachingAllocator(const BasicCachingAllocator&) = delete;
  BasicCachingAllocator& operator=(const BasicCachingAllocator&) = delete;
  ~BasicCachingAllocator() { empty_cache(); }

  // A block of at least n bytes (null for n == 0). Served from the free list of its size class when possible;
  // otherwise from the backend, and when that fails, after empty_cache(), once more before the error (which
  // then names the bytes in use) propagates.
  void* allocate(std::size_t n) {
    if (n == 0) return nullptr;
    ARCLIGHT_CHECK(n <= kMaxRequest, backend_.name(), "request of ", n, " bytes is larger than the 2^62 limit");
    const std::size_t cls = caching_size_class(n);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.requests;
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        ++stats_.cache_hits;
        stats_.bytes_cached -= cls;
        note_in_use(cls);
        return p;
      }
    }
    void* p = nullptr;
    try {
      p = backend_.allocate(cls);
    } catch (const Error&) {
      empty_cache();
      try {
        p = backend_.allocate(cls);
      } catch (const Error& e) {
        const CachingAllocatorStats s = stats();
        fail(backend_.name(), "out of memory for ", cls, " bytes after emptying the cache (", s.bytes_in_use,
             " bytes in use by live blocks): ", e.what());
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.system_allocs;
    note_in_use(cls);
    return p;
  }

  // Takes back a block from allocate(n) with the same n (null is a no-op). The block goes to the free list.
  void deallocate(void* p, std::size_t n) noexcept {
    if (p == nullptr) return;
    const std::size_t cls = caching_size_class(n);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.bytes_in_use -= cls;
    if (!caching_) {
      ++stats_.system_frees;
      backend_.release(p);
      return;
    }
    try {
      free_[cls].push_back(p);
      stats_.bytes_cached += cls;
    } catch (...) {  // no memory for the list entry: give the block back instead
      ++stats_.system_frees;
      backend_.release(p);
    }
  }

  // Returns every cached block to the backend (blocks in use are untouched).
  void empty_cache() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [cls, blocks] : free_) {
      for (void* p : blocks) backend_.release(p);
      stats_.system_frees += blocks.size();
    }
    free_.clear();
    stats_.bytes_cached = 0;
  }

  // Off: every deallocate goes straight to the backend (leak hunting, compute-sanitizer runs).
  void set_caching(bool on) {
    if (!on) empty_cache();
    std::lock_guard<std::mutex> lock(mu_);
    caching_ = on;
  }

  CachingAllocatorStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  // Zeroes the counters (system_allocs, hits, requests, peak := in use); the byte totals stay exact.
  void reset_counters() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.system_allocs = stats_.system_frees = stats_.cache_hits = stats_.requests = 0;
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }

  Backend& backend() { return backend_; }

 private:
  void note_in_use(std::size_t cls) {
    stats_.bytes_in_use += cls;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }

  Backend backend_;
  mutable std::mutex mu_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  CachingAllocatorStats stats_;
  bool caching_ = true;
};

#ifdef ARCLIGHT_WITH_CUDA

// The most devices the process-wide allocators serve.
inline constexpr int kMaxDevices = 16;

// Backend: cudaMalloc / cudaFree on one device (made current for the call, then restored).
class DeviceMemoryBackend {
 public:
  explicit DeviceMemoryBackend(int device = 0) : device_(device), name_("cuda::device_allocator(" + std::to_string(device) + ")") {}
  void* allocate(std::size_t bytes) {
    const int prev = kernels::cuda::get_device();
    if (prev != device_) kernels::cuda::set_device(device_);
    void* p = nullptr;
    try {
      p = kernels::cuda::device_malloc(bytes, name_.c_str());
    } catch (...) {
      if (prev != device_) kernels::cuda::set_device(prev);
      throw;
    }
    if (prev != device_) kernels::cuda::set_device(prev);
    return p;
  }
  // cudaFree works on a pointer of any device (unified addressing).
  void release(void* p) noexcept { kernels::cuda::device_free(p); }
  const char* name() const { return name_.c_str(); }

 private:
  int device_;
  std::string name_;
};

// Backend: cudaHostAlloc / cudaFreeHost.
class PinnedMemoryBackend {
 public:
  void* allocate(std::size_t bytes) { return kernels::cuda::pinned_host_malloc(bytes, name()); }
  void release(void* p) noexcept { kernels::cuda::pinned_host_free(p); }
  const char* name() const { return "cuda::pinned_allocator"; }
};

using DeviceCachingAllocator = BasicCachingAllocator<DeviceMemoryBackend>;
using PinnedCachingAllocator = BasicCachingAllocator<PinnedMemoryBackend>;

// The process-wide caching allocator of device `device`. requires: available() and 0 <= device <
// availability().device_count (throws arclight::Error otherwise). Deliberately never destroyed: device
// storages held by static objects may be freed during static destruction, and freeing into the driver after
// its own teardown would fail.
inline DeviceCachingAllocator& device_allocator(int device = 0) {
  require_available("cuda::device_allocator");
  ARCLIGHT_CHECK(device >= 0 && device < availability().device_count && device < kMaxDevices,
                 "cuda::device_allocator", "device ", device, " requested but ", availability().device_count,
                 " CUDA device(s) exist");
  static DeviceCachingAllocator* instances[kMaxDevices] = {};
  static std::once_flag once[kMaxDevices];
  std::call_once(once[device], [device] { instances[device] = new DeviceCachingAllocator(DeviceMemoryBackend(device)); });
  return *instances[device];
}

// The process-wide pinned host allocator (never destroyed, as above). requires: available().
inline PinnedCachingAllocator& pinned_allocator() {
  require_available("cuda::pinned_allocator");
  static auto* alloc = new PinnedCachingAllocator();
  return *alloc;
}

// An owning handle on `count` elements of pinned host memory from pinned_allocator(), for staging batches
// that are copied to the device asynchronously. Move-only; the memory is uninitialised.
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t count)
      : ptr_(static_cast<T*>(pinned_allocator().allocate(count * sizeof(T)))), count_(count) {}
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  ~PinnedBuffer() { release(); }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }

 private:
  void release() noexcept {
    if (ptr_ != nullptr) pinned_allocator().deallocate(ptr_, bytes());
    ptr_ = nullptr;
  }
  T* ptr_ = nullptr;
  std::size_t count_ = 0;
};

#endif  // ARCLIGHT_WITH_CUDA

namespace detail {

// Tensor storage on Device::cuda(index): `nbytes` from device_allocator(index). Throws
// "<op>: CUDA device requested but <reason>" without the backend or a GPU, or for a device that does not exist.
inline void* storage_allocate(std::size_t nbytes, int index, const char* op) {
  ARCLIGHT_CHECK(available(), op, "CUDA device requested but ", availability().reason);
  ARCLIGHT_CHECK(index >= 0 && index < availability().device_count, op, "CUDA device cuda:", index,
                 " requested but ", availability().device_count, " CUDA device(s) exist");
#ifdef ARCLIGHT_WITH_CUDA
  return device_allocator(index).allocate(nbytes);
#else
  (void)nbytes;
  fail(op, "CUDA device requested but this build has no CUDA backend");
#endif
}

inline void storage_free(void* p, std::size_t nbytes, int index) noexcept {
#ifdef ARCLIGHT_WITH_CUDA
  if (p != nullptr) device_allocator(index).deallocate(p, nbytes);
#else
  (void)p, (void)nbytes, (void)index;
#endif
}

// Copies nbytes between two buffers on the given devices (host <-> device, device -> device through the host
// when the devices differ). Blocking: returns once dst holds the bytes and src may be reused.
inline void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes,
                       const char* op) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  ARCLIGHT_CHECK(available(), op, "CUDA device requested but ", availability().reason);
#ifdef ARCLIGHT_WITH_CUDA
  namespace kc = kernels::cuda;
  if (dst_device.is_cuda() && src_device.is_cpu()) {
    kc::memcpy_host_to_device(dst, src, nbytes, nullptr, op);
    kc::synchronize(nullptr, op);
  } else if (dst_device.is_cpu() && src_device.is_cuda()) {
    kc::synchronize(nullptr, op);  // earlier kernels writing src (reports their errors under op)
    kc::memcpy_device_to_host(dst, src, nbytes, nullptr, op);
  } else if (dst_device.index == src_device.index) {
    kc::memcpy_device_to_device(dst, src, nbytes, nullptr, op);
    kc::synchronize(nullptr, op);
  } else {
    std::vector<unsigned char> staging(nbytes);
    copy_bytes(staging.data(), Device::cpu(), src, src_device, nbytes, op);
    copy_bytes(dst, dst_device, staging.data(), Device::cpu(), nbytes, op);
  }
#else
  (void)dst, (void)src;
  fail(op, "CUDA device requested but this build has no CUDA backend");
#endif
}

}  // namespace detail

}  // namespace arclight::cuda
