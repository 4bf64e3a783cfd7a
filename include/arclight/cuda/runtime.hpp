// Host-side CUDA runtime of arclight: whether a GPU can be used (arclight::cuda::available(), decided once
// and cached; ARCLIGHT_DEVICE=cpu forces the CPU), a one-line description of the device for logs, and
// DeviceBuffer<T>, an owning RAII handle on a device allocation with checked copies. In a build without
// ARCLIGHT_WITH_CUDA every query answers "no GPU" (with the reason) and nothing here touches CUDA, so code
// can ask unconditionally. The raw primitives underneath are kernels/cuda/launchers.hpp (defined by the one
// nvcc translation unit, kernels/arclight_cuda.cu). No CUDA header is included from here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/core/profiler.hpp"

#ifdef ARCLIGHT_WITH_CUDA
#include "kernels/cuda/launchers.hpp"
#endif

namespace arclight::cuda {

// Whether the CUDA backend can run here, and why not when it cannot.
struct Availability {
  bool available = false;
  int device_count = 0;
  std::string reason;  // empty when available; else a sentence for a log line or a test skip
};

namespace detail {
inline Availability probe() {
  Availability a;
  const char* forced = std::getenv("ARCLIGHT_DEVICE");
  if (forced != nullptr && std::strcmp(forced, "cpu") == 0) {
    a.reason = "ARCLIGHT_DEVICE=cpu forces the CPU backend";
    return a;
  }
#ifdef ARCLIGHT_WITH_CUDA
  std::string why;
  a.device_count = kernels::cuda::device_count(&why);
  a.available = a.device_count > 0;
  if (!a.available) a.reason = "no usable CUDA device (" + why + ")";
#else
  a.reason = "this build has no CUDA backend (configured with ARCLIGHT_CUDA=OFF or without nvcc/cuDNN)";
#endif
  return a;
}
}  // namespace detail

// The cached probe (first call decides; thread-safe static initialisation).
inline const Availability& availability() {
  static const Availability a = detail::probe();
  return a;
}

// True when this build has the CUDA backend, a GPU is usable and ARCLIGHT_DEVICE is not "cpu".
inline bool available() { return availability().available; }

// "cuda: NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 50 MiB L2, 79 GiB)" or "cpu (<reason>)": the backend line
// that programs print so a fallback is never silent.
inline std::string backend_description() {
  if (!available()) return "cpu (" + availability().reason + ")";
#ifdef ARCLIGHT_WITH_CUDA
  return "cuda: " + kernels::cuda::device_description(0);
#else
  return "cpu";
#endif
}

// Throws arclight::Error naming `op` unless available().
inline void require_available(const char* op) {
  ARCLIGHT_CHECK(available(), op, "needs a CUDA device, but ", availability().reason);
}

// Makes the op profiler report device time (core/profiler.hpp, set_device_sync): each outermost op waits for the GPU
// on entry and before its clock stops. Off again with false. The wait runs in a destructor and must not throw, so
// an error it meets is not raised there; device faults are sticky and the next checked call reports them.
// requires: available() to turn it on.
inline void profile_device_time(bool on) {
  if (on) require_available("cuda::profile_device_time");
#ifdef ARCLIGHT_WITH_CUDA
  profiler::set_device_sync(on ? +[] {
    try {
      kernels::cuda::synchronize(nullptr, "profiler");
    } catch (...) {
    }
  }
                               : nullptr);
#else
  profiler::set_device_sync(nullptr);
#endif
}

#ifdef ARCLIGHT_WITH_CUDA

using Stream = kernels::cuda::Stream;

// An owning handle on `count` elements of device memory (trivially copyable T). Move-only.
// requires: available() (the constructor throws arclight::Error otherwise).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count, const char* op = "cuda::DeviceBuffer") : count_(count) {
    require_available(op);
    ptr_ = static_cast<T*>(kernels::cuda::device_malloc(count * sizeof(T), op));
  }
  // Allocates and uploads `values` (synchronous with respect to `values`: it may be freed on return).
  explicit DeviceBuffer(const std::vector<T>& values, const char* op = "cuda::DeviceBuffer")
      : DeviceBuffer(values.size(), op) {
    upload(values, op);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      kernels::cuda::device_free(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { kernels::cuda::device_free(ptr_); }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  std::size_t size() const { return count_; }
  std::size_t bytes() const { return count_ * sizeof(T); }

  // requires: values.size() == size(). Blocking (the legacy default stream).
  void upload(const std::vector<T>& values, const char* op = "cuda::DeviceBuffer::upload") {
    ARCLIGHT_CHECK(values.size() == count_, op, "expected ", count_, " values, got ", values.size());
    if (count_ == 0) return;
    kernels::cuda::memcpy_host_to_device(ptr_, values.data(), bytes(), nullptr, op);
    kernels::cuda::synchronize(nullptr, op);
  }
  // Waits for all work on the legacy default stream, then copies back (reporting any kernel error under op).
  std::vector<T> download(const char* op = "cuda::DeviceBuffer::download") const {
    std::vector<T> out(count_);
    kernels::cuda::synchronize(nullptr, op);
    if (count_ > 0) kernels::cuda::memcpy_device_to_host(out.data(), ptr_, bytes(), nullptr, op);
    return out;
  }
  // Fills every byte with `byte_value` (0xFF: float NaN garbage before a kernel is meant to overwrite it).
  void fill_bytes(int byte_value, Stream stream = nullptr) {
    if (count_ > 0) kernels::cuda::memset_device(ptr_, byte_value, bytes(), stream, "cuda::DeviceBuffer::fill_bytes");
  }

 private:
  T* ptr_ = nullptr;
  std::size_t count_ = 0;
};

#endif  // ARCLIGHT_WITH_CUDA

}  // namespace arclight::cuda
