// Definitions of the raw runtime primitives declared in kernels/cuda/launchers.hpp: device query, device
// memory, copies, streams. Thin, checked wrappers over the CUDA runtime; arclight/cuda/runtime.hpp builds the
// user-facing layer (availability, RAII buffers) on them.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/common.cuh"

namespace arclight::kernels::cuda {

int device_count(std::string* why) {
  int count = 0;
  const cudaError_t st = cudaGetDeviceCount(&count);
  if (st != cudaSuccess) {
    if (why != nullptr) *why = std::string(cudaGetErrorName(st)) + ": " + cudaGetErrorString(st);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  if (count == 0 && why != nullptr) *why = "the CUDA runtime reports 0 devices";
  return count;
}

DeviceInfo device_info(int device) {
  cudaDeviceProp prop{};
  detail::check_cuda(cudaGetDeviceProperties(&prop, device), "cuda::device_info", "cudaGetDeviceProperties");
  DeviceInfo info;
  info.name = prop.name;
  info.major = prop.major;
  info.minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.l2_cache_bytes = prop.l2CacheSize;
  info.global_memory_bytes = std::int64_t(prop.totalGlobalMem);
  return info;
}

std::string device_description(int device) {
  const DeviceInfo d = device_info(device);
  return str_cat(d.name, " (sm_", d.major, d.minor, ", ", d.multiprocessors, " SMs, ", d.l2_cache_bytes >> 20,
                 " MiB L2, ", d.global_memory_bytes >> 30, " GiB)");
}

void set_device(int device) { detail::check_cuda(cudaSetDevice(device), "cuda::set_device", "cudaSetDevice"); }

int get_device() {
  int d = 0;
  detail::check_cuda(cudaGetDevice(&d), "cuda::get_device", "cudaGetDevice");
  return d;
}

void* device_malloc(std::size_t bytes, const char* op) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  const cudaError_t st = cudaMalloc(&p, bytes);
  if (st != cudaSuccess) {
    cudaGetLastError();
    ::arclight::fail(op, "cudaMalloc of ", bytes, " bytes failed: ", cudaGetErrorName(st), ": ",
                     cudaGetErrorString(st));
  }
  return p;
}

void device_free(void* ptr) noexcept {
  if (ptr != nullptr) cudaFree(ptr);
}

void* pinned_host_malloc(std::size_t bytes, const char* op) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  const cudaError_t st = cudaHostAlloc(&p, bytes, cudaHostAllocDefault);
  if (st != cudaSuccess) {
    cudaGetLastError();
    ::arclight::fail(op, "cudaHostAlloc of ", bytes, " bytes failed: ", cudaGetErrorName(st), ": ",
                     cudaGetErrorString(st));
  }
  return p;
}

void pinned_host_free(void* ptr) noexcept {
  if (ptr != nullptr) cudaFreeHost(ptr);
}

void memcpy_host_to_device(void* dst, const void* src_host, std::size_t bytes, Stream stream, const char* op) {
  detail::check_cuda(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, stream), op,
                     "cudaMemcpyAsync(host to device)");
}

void memcpy_device_to_host(void* dst_host, const void* src, std::size_t bytes, Stream stream, const char* op) {
  detail::check_cuda(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, stream), op,
                     "cudaMemcpyAsync(device to host)");
  // Pageable host memory: the copy is only complete once the stream is.
  detail::check_cuda(cudaStreamSynchronize(stream), op, "cudaStreamSynchronize");
}

void memcpy_device_to_device(void* dst, const void* src, std::size_t bytes, Stream stream, const char* op) {
  detail::check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream), op,
                     "cudaMemcpyAsync(device to device)");
}

void memset_device(void* dst, int byte_value, std::size_t bytes, Stream stream, const char* op) {
  detail::check_cuda(cudaMemsetAsync(dst, byte_value, bytes, stream), op, "cudaMemsetAsync");
}

void synchronize(Stream stream, const char* op) {
  detail::check_cuda(cudaStreamSynchronize(stream), op, "cudaStreamSynchronize");
  detail::check_cuda(cudaGetLastError(), op, "an earlier asynchronous kernel");
}

Stream stream_create(const char* op) {
  cudaStream_t s = nullptr;
  detail::check_cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), op, "cudaStreamCreateWithFlags");
  return s;
}

void stream_destroy(Stream stream) noexcept {
  if (stream != nullptr) cudaStreamDestroy(stream);
}

Event event_create(const char* op) {
  cudaEvent_t e = nullptr;
  detail::check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), op, "cudaEventCreateWithFlags");
  return e;
}

void event_record(Event event, Stream stream, const char* op) {
  detail::check_cuda(cudaEventRecord(event, stream), op, "cudaEventRecord");
}

void event_synchronize(Event event, const char* op) {
  detail::check_cuda(cudaEventSynchronize(event), op, "cudaEventSynchronize");
}

void event_destroy(Event event) noexcept {
  if (event != nullptr) cudaEventDestroy(event);
}

}  // namespace arclight::kernels::cuda
