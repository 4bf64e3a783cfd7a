// Asynchronous host-to-device uploads of training batches through pinned staging memory.
//
// A plain Tensor::to(device) copies from pageable memory: the driver stages the bytes itself and the host waits for
// that. BatchUploader keeps a ring of page-locked buffers from the pinned caching allocator: upload() copies the
// host bytes into the next buffer and enqueues a truly asynchronous copy to a fresh device tensor on the tensors'
// stream (the legacy default stream), then returns at once; the kernels that consume the tensor are ordered after
// the copy by the stream. Before a buffer is refilled, upload() waits on the event recorded after its previous copy,
// so a buffer is never overwritten while the DMA still reads it. With `slots` buffers the host can run that many
// uploads ahead of the device.
//
// In a build without CUDA, or for a CPU destination, upload() is a plain copy into a CPU tensor, so callers need no
// #ifdefs; a CUDA destination there is the usual "CUDA device requested but ..." error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "arclight/core/tensor.hpp"

namespace arclight::cuda {

class BatchUploader {
 public:
  // requires: slots >= 1.
  explicit BatchUploader(int slots = 4) : slots_(static_cast<std::size_t>(slots)) {
    ARCLIGHT_CHECK(slots >= 1, "cuda::BatchUploader", "expected slots >= 1, got ", slots);
  }
  BatchUploader(const BatchUploader&) = delete;
  BatchUploader& operator=(const BatchUploader&) = delete;
  ~BatchUploader() {
#ifdef ARCLIGHT_WITH_CUDA
    for (Slot& s : slots_) {
      if (s.event == nullptr) continue;
      try {
        kernels::cuda::event_synchronize(s.event, "cuda::BatchUploader");  // no DMA may outlive its buffer
      } catch (...) {
      }
      kernels::cuda::event_destroy(s.event);
    }
#endif
  }

  // A new contiguous tensor of `shape` and `dtype` on `dev` holding the numel·size bytes at `host`. On a CUDA
  // device the copy is asynchronous (see the file comment): `host` may be reused as soon as this returns.
  // requires: host points at shape's numel elements of dtype (not null unless the shape is empty).
  Tensor upload(const void* host, const Shape& shape, DType dtype, Device dev) {
    Tensor out = empty(shape, dtype, dev);
    const std::size_t bytes = static_cast<std::size_t>(out.numel()) * dtype_size(dtype);
    ARCLIGHT_CHECK(bytes == 0 || host != nullptr, "cuda::BatchUploader::upload", "expected ", bytes,
                   " bytes of host data for ", out.str(), ", got null");
    if (bytes == 0) return out;
    if (dev.is_cpu()) {
      std::memcpy(out.raw_data(), host, bytes);
      return out;
    }
#ifdef ARCLIGHT_WITH_CUDA
    const char* op = "cuda::BatchUploader::upload";
    Slot& s = slots_[next_];
    next_ = (next_ + 1) % slots_.size();
    if (s.event == nullptr)
      s.event = kernels::cuda::event_create(op);
    else
      kernels::cuda::event_synchronize(s.event, op);  // the previous copy out of this buffer has finished
    if (s.buffer.bytes() < bytes) s.buffer = PinnedBuffer<std::uint8_t>(bytes);
    std::memcpy(s.buffer.data(), host, bytes);
    kernels::cuda::memcpy_host_to_device(out.raw_data(), s.buffer.data(), bytes, nullptr, op);
    kernels::cuda::event_record(s.event, nullptr, op);
    ++uploads_;
#endif
    return out;
  }

  // The same for a vector of values (e.g. a batch's labels or pixels).
  template <typename T>
  Tensor upload(const std::vector<T>& values, const Shape& shape, Device dev) {
    ARCLIGHT_CHECK(static_cast<std::int64_t>(values.size()) == shape_numel(shape), "cuda::BatchUploader::upload",
                   "expected ", shape_numel(shape), " values for shape ", shape_str(shape), ", got ", values.size());
    return upload(values.data(), shape, dtype_v<T>, dev);
  }

  // Device uploads made so far (what went through the pinned ring).
  std::int64_t device_uploads() const { return uploads_; }

 private:
  struct Slot {
#ifdef ARCLIGHT_WITH_CUDA
    PinnedBuffer<std::uint8_t> buffer;
    kernels::cuda::Event event = nullptr;
#endif
  };
  std::vector<Slot> slots_;
  std::size_t next_ = 0;
  std::int64_t uploads_ = 0;
};

}  // namespace arclight::cuda
