// Device storage and the caching allocators (arclight/cuda/allocator.hpp, Tensor::to in core/tensor.hpp).
// This file builds in EVERY configuration (label `unit`, executable cuda_host): the size-class arithmetic and
// the caching logic run on the CPU through a malloc backend; Tensor::to(Device::cuda()) must fail with
// "Tensor::to: CUDA device requested but <reason>" where no GPU can be used (a build without CUDA, or a CUDA
// build on a GPU-less machine); on a machine with a GPU the round trips CPU -> GPU -> CPU must be bit-identical
// for f32/f64/i64/bf16, from contiguous tensors and from views, and a steady-state allocation loop must make no
// new cudaMalloc; ops with a device path run on device tensors and host-only ops refuse them. The emulated build
// (tests/cuda_emu, `emu_tensor`) runs the GPU cases on the CPU too.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "arclight/arclight.hpp"
#include "arclight/cuda/allocator.hpp"
#include "harness.hpp"

namespace {

using arclight::Device;
using arclight::DType;
using arclight::Tensor;
namespace ac = arclight::cuda;

#define ARCLIGHT_REQUIRE_GPU_HERE()                                                     \
  do {                                                                                  \
    if (!ac::available()) GTEST_SKIP() << "CUDA test skipped: " << ac::availability().reason; \
  } while (0)

// ---- size classes (pure arithmetic) ------------------------------------------------------------------

TEST(CachingSizeClass, KnownValues) {
  EXPECT_EQ(ac::caching_size_class(0), 0u);
  EXPECT_EQ(ac::caching_size_class(1), 512u);
  EXPECT_EQ(ac::caching_size_class(512), 512u);
  EXPECT_EQ(ac::caching_size_class(513), 1024u);
  EXPECT_EQ(ac::caching_size_class(4096), 4096u);
  EXPECT_EQ(ac::caching_size_class(4097), 4608u);
  EXPECT_EQ(ac::caching_size_class(8192), 8192u);
  EXPECT_EQ(ac::caching_size_class(8193), 9216u);
  EXPECT_EQ(ac::caching_size_class(std::size_t{1} << 20), std::size_t{1} << 20);
  EXPECT_EQ(ac::caching_size_class((std::size_t{1} << 20) + 1), (std::size_t{1} << 20) + (std::size_t{1} << 17));
  // 100 000 classes x 1024 rows of f32 (the CE logits): 409.6 MB -> 13 steps of 32 MiB (8 steps per 256 MiB).
  EXPECT_EQ(ac::caching_size_class(409600000), std::size_t{13} * (std::size_t{1} << 25));
}

TEST(CachingSizeClass, BoundsOnRandomSizes) {
  std::mt19937_64 g(12345);
  for (int i = 0; i < 200000; ++i) {
    const int bits = int(g() % 40) + 1;
    const std::size_t n = std::size_t(g() % (std::uint64_t{1} << bits)) + 1;
    const std::size_t c = ac::caching_size_class(n);
    ASSERT_GE(c, n);
    ASSERT_EQ(c % 512, 0u) << n;
    if (n > 4096) {
      ASSERT_LE(double(c - n), double(n) / 8.0) << "more than 12.5% waste for n=" << n;
    } else {
      ASSERT_LT(c - n, 512u) << n;
    }
    ASSERT_EQ(ac::caching_size_class(c), c) << "a class must map to itself, n=" << n;
    ASSERT_LE(ac::caching_size_class(n - 1), c) << "not monotone at n=" << n;
  }
}

// ---- the caching logic over a malloc backend ----------------------------------------------------------

struct FakeBackend {
  std::set<void*>* live;        // blocks the backend handed out and has not got back
  std::size_t* live_bytes;
  std::size_t limit = SIZE_MAX;  // fail when live bytes would exceed it
  std::vector<std::pair<void*, std::size_t>>* sizes;
  void* allocate(std::size_t bytes) {
    if (*live_bytes + bytes > limit) arclight::fail("fake", "out of memory (", bytes, " bytes)");
    void* p = std::malloc(bytes);
    live->insert(p);
    *live_bytes += bytes;
    sizes->push_back({p, bytes});
    return p;
  }
  void release(void* p) noexcept {
    live->erase(p);
    for (auto& [q, b] : *sizes)
      if (q == p) {
        *live_bytes -= b;
        q = nullptr;
        break;
      }
    std::free(p);
  }
  const char* name() const { return "fake_allocator"; }
};

struct FakeWorld {
  std::set<void*> live;
  std::size_t live_bytes = 0;
  std::vector<std::pair<void*, std::size_t>> sizes;
  FakeBackend backend(std::size_t limit = SIZE_MAX) { return FakeBackend{&live, &live_bytes, limit, &sizes}; }
};

TEST(CachingAllocator, SteadyStateMakesNoSystemAllocations) {
  FakeWorld w;
  {
    ac::BasicCachingAllocator<FakeBackend> a(w.backend());
    EXPECT_EQ(a.allocate(0), nullptr);
    const std::vector<std::size_t> step_sizes{100, 4000, 70000, 1 << 20, 3 << 20, 100};  // 100 twice: two blocks
    for (int step = 0; step < 5; ++step) {
      std::vector<void*> held;
      for (std::size_t n : step_sizes) {
        void* p = a.allocate(n);
        ASSERT_NE(p, nullptr);
        std::memset(p, 0x5A, n);  // the block really holds n bytes (ASan would flag less)
        held.push_back(p);
      }
      const ac::CachingAllocatorStats s = a.stats();
      EXPECT_EQ(s.system_allocs, step_sizes.size()) << "step " << step << ": new system allocations";
      EXPECT_EQ(s.cache_hits, std::uint64_t(step) * step_sizes.size());
      std::uint64_t expect_in_use = 0;
      for (std::size_t n : step_sizes) expect_in_use += ac::caching_size_class(n);
      EXPECT_EQ(s.bytes_in_use, expect_in_use);
      EXPECT_EQ(s.bytes_cached, 0u);
      EXPECT_EQ(s.peak_bytes_in_use, expect_in_use);
      for (std::size_t i = 0; i < held.size(); ++i) a.deallocate(held[i], step_sizes[i]);
      EXPECT_EQ(a.stats().bytes_in_use, 0u);
      EXPECT_EQ(a.stats().bytes_cached, expect_in_use);
    }
    EXPECT_EQ(w.live.size(), step_sizes.size()) << "cached blocks stay allocated in the backend";
    // A size in the same class reuses the block; another class does not.
    void* p = a.allocate(ac::caching_size_class(70000));
    EXPECT_EQ(a.stats().system_allocs, step_sizes.size());
    void* q = a.allocate(5 << 20);
    EXPECT_EQ(a.stats().system_allocs, step_sizes.size() + 1);
    a.deallocate(p, ac::caching_size_class(70000));
    a.deallocate(q, 5 << 20);
    a.empty_cache();
    EXPECT_TRUE(w.live.empty()) << "empty_cache must hand every cached block back";
    EXPECT_EQ(a.stats().bytes_cached, 0u);
    EXPECT_EQ(a.stats().system_frees, step_sizes.size() + 1);
    // Caching off: every free goes straight back.
    a.set_caching(false);
    void* r = a.allocate(1000);
    EXPECT_EQ(w.live.size(), 1u);
    a.deallocate(r, 1000);
    EXPECT_TRUE(w.live.empty());
    a.reset_counters();
    EXPECT_EQ(a.stats().system_allocs, 0u);
    EXPECT_EQ(a.stats().requests, 0u);
  }
  EXPECT_TRUE(w.live.empty());
}

TEST(CachingAllocator, OutOfMemoryEmptiesTheCacheAndRetries) {
  FakeWorld w;
  ac::BasicCachingAllocator<FakeBackend> a(w.backend(3 << 20));
  void* p = a.allocate(2 << 20);
  a.deallocate(p, 2 << 20);  // 2 MiB cached
  // 1.5 MiB more would exceed the 3 MiB limit with the cached block still held: the allocator must give the
  // cached block back and succeed on the retry.
  void* q = a.allocate(3 << 19);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(a.stats().bytes_cached, 0u);
  EXPECT_EQ(a.stats().system_frees, 1u);
  // A request that cannot fit even with an empty cache names the allocator and the bytes in use.
  EXPECT_ERROR_WITH(a.allocate(2 << 20), "fake_allocator", "out of memory for", "after emptying the cache",
                    std::to_string(ac::caching_size_class(3 << 19)) + " bytes in use");
  EXPECT_ERROR_WITH(a.allocate(~std::size_t{0}), "fake_allocator", "larger than the 2^62 limit");
  a.deallocate(q, 3 << 19);
}

// ---- Tensor storage on a CUDA device -------------------------------------------------------------

TEST(DeviceTensor, CudaRequestWithoutGpuSaysWhy) {
  Tensor t = arclight::tensor({1.0, 2.0, 3.0});
  if (ac::available()) {
    // Where a GPU exists, a device index past the last one is the error to check.
    EXPECT_ERROR_WITH(t.to(Device::cuda(ac::availability().device_count)), "Tensor::to",
                      "CUDA device cuda:" + std::to_string(ac::availability().device_count) + " requested but");
    return;
  }
  const std::string reason = ac::availability().reason;
  ASSERT_FALSE(reason.empty());
  EXPECT_ERROR_WITH(t.to(Device::cuda()), "Tensor::to: CUDA device requested but " + reason);
  EXPECT_ERROR_WITH(arclight::empty({4}, DType::f32, Device::cuda()), "Storage: CUDA device requested but " + reason);
#ifndef ARCLIGHT_WITH_CUDA
  EXPECT_NE(reason.find("no CUDA backend"), std::string::npos) << reason;
#endif
  // to(cpu) of a CPU tensor is the tensor itself.
  EXPECT_TRUE(t.to(Device::cpu()).is_same(t));
}

Tensor random_tensor(DType dtype, const arclight::Shape& shape, std::uint64_t seed) {
  arclight::Generator gen(seed);
  if (dtype == DType::i64) return arclight::randint(-1000000000000LL, 1000000000000LL, shape, DType::i64, gen);
  if (dtype == DType::bf16) {
    // bf16 is storage-only on the CPU: fill the raw 16-bit patterns (finite values: exponent != 0xFF).
    Tensor t = arclight::empty(shape, DType::bf16);
    std::mt19937_64 g(seed);
    auto* p = static_cast<std::uint16_t*>(t.raw_data());
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      std::uint16_t v = std::uint16_t(g());
      if (((v >> 7) & 0xFF) == 0xFF) v &= 0xBFFF;
      p[i] = v;
    }
    return t;
  }
  return arclight::randn(shape, dtype, gen);
}

std::vector<unsigned char> bytes_of(const Tensor& cpu_contiguous) {
  const auto* p = static_cast<const unsigned char*>(cpu_contiguous.raw_data());
  return std::vector<unsigned char>(p, p + cpu_contiguous.numel() * std::int64_t(cpu_contiguous.element_size()));
}

TEST(DeviceTensor, RoundTripIsBitIdentical) {
  ARCLIGHT_REQUIRE_GPU_HERE();
  for (DType dt : {DType::f32, DType::f64, DType::i64, DType::bf16}) {
    for (const arclight::Shape& shape : {arclight::Shape{7, 13}, arclight::Shape{3, 1, 1000}, arclight::Shape{0, 4},
                                         arclight::Shape{}}) {
      SCOPED_TRACE(std::string(arclight::dtype_name(dt)) + " " + arclight::shape_str(shape));
      const Tensor a = random_tensor(dt, shape, 99 + std::uint64_t(dt));
      const Tensor d = a.to(Device::cuda());
      EXPECT_TRUE(d.device() == Device::cuda());
      EXPECT_EQ(d.shape(), a.shape());
      EXPECT_EQ(d.dtype(), dt);
      EXPECT_TRUE(d.is_contiguous());
      EXPECT_TRUE(d.to(Device::cuda()).is_same(d));
      const Tensor b = d.to(Device::cpu());
      EXPECT_TRUE(b.device().is_cpu());
      EXPECT_EQ(bytes_of(b), bytes_of(a));
    }
  }
}

// A view of t's storage with the given geometry (any device; ops' views refuse device tensors).
Tensor view_of(const Tensor& t, const arclight::Shape& shape, const arclight::Strides& strides, std::int64_t offset) {
  auto impl = std::make_shared<arclight::TensorImpl>();
  impl->storage = t.storage();
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = t.dtype();
  return Tensor(std::move(impl));
}

TEST(DeviceTensor, NonContiguousSourcesAreGathered) {
  ARCLIGHT_REQUIRE_GPU_HERE();
  for (DType dt : {DType::f32, DType::f64, DType::i64, DType::bf16}) {
    SCOPED_TRACE(arclight::dtype_name(dt));
    const Tensor base = random_tensor(dt, {6, 10, 4}, 7 + std::uint64_t(dt));
    // CPU view -> GPU: a transposed, offset, strided slice.
    const Tensor v = view_of(base, {3, 4, 5}, {40, 1, 8}, 40 + 2);  // rows 1..3, last dim first, every 2nd middle
    ASSERT_FALSE(v.is_contiguous());
    std::vector<unsigned char> want;
    {
      const auto* p = static_cast<const unsigned char*>(base.raw_data());
      const std::size_t es = base.element_size();
      for (std::int64_t i = 0; i < 3; ++i)
        for (std::int64_t j = 0; j < 4; ++j)
          for (std::int64_t k = 0; k < 5; ++k) {
            const std::int64_t off = 42 + i * 40 + j * 1 + k * 8;
            want.insert(want.end(), p + off * std::int64_t(es), p + (off + 1) * std::int64_t(es));
          }
    }
    const Tensor d = v.to(Device::cuda());
    EXPECT_TRUE(d.is_contiguous());
    EXPECT_EQ(d.shape(), v.shape());
    EXPECT_EQ(bytes_of(d.to(Device::cpu())), want);
    // GPU view -> CPU: the same geometry over a device copy of the whole base.
    const Tensor dbase = base.to(Device::cuda());
    const Tensor dv = view_of(dbase, v.shape(), v.strides(), v.offset());
    const Tensor back = dv.to(Device::cpu());
    EXPECT_TRUE(back.is_contiguous());
    EXPECT_EQ(bytes_of(back), want);
    // Broadcast (stride 0) view on the device.
    const Tensor bv = view_of(dbase, {3, 4}, {0, 1}, 4);
    const Tensor bb = bv.to(Device::cpu());
    const std::size_t es = base.element_size();
    const auto* src = static_cast<const unsigned char*>(base.raw_data()) + 4 * es;
    for (int r = 0; r < 3; ++r)
      EXPECT_EQ(std::memcmp(static_cast<const unsigned char*>(bb.raw_data()) + r * 4 * es, src, 4 * es), 0) << r;
  }
}

// Ops with a CUDA path run on device tensors and keep them there; an op without one refuses them with a message that
// names the op and the device (no silent transfer); reading elements needs an explicit copy.
TEST(DeviceTensor, DeviceOpsRunAndCpuOnlyOpsRefuse) {
  ARCLIGHT_REQUIRE_GPU_HERE();
  Tensor d = arclight::tensor({1.5, -2.0, 3.25}).to(Device::cuda());
  EXPECT_ERROR_WITH(d.to_vector<float>(), "Tensor::to_vector", "copy it to the CPU first");
  const Tensor sum = arclight::ops::add(d, d);
  EXPECT_TRUE(sum.device().is_cuda());
  EXPECT_EQ(sum.to(Device::cpu()).to_vector<float>(), (std::vector<float>{3.0f, -4.0f, 6.5f}));
  const Tensor copy = arclight::ops::clone(d);
  EXPECT_FALSE(copy.is_same(d));
  arclight::fill_(d, 0.75);
  EXPECT_EQ(d.to(Device::cpu()).to_vector<float>(), (std::vector<float>{0.75f, 0.75f, 0.75f}));
  EXPECT_EQ(copy.to(Device::cpu()).to_vector<float>(), (std::vector<float>{1.5f, -2.0f, 3.25f}));
  // CPU-only ops (the data pipeline's and evaluation's) name the op and the device.
  EXPECT_ERROR_WITH(arclight::ops::topk(d, 1), "topk", "is on cuda:0", "no CUDA implementation");
  EXPECT_ERROR_WITH(arclight::ops::var(d), "var", "is on cuda:0", "no CUDA implementation");
  const std::vector<Tensor> pair = {d, d};
  EXPECT_ERROR_WITH(arclight::ops::cat(pair), "cat", "is on cuda:0", "no CUDA implementation");
}

TEST(DeviceTensor, SteadyStateMakesNoNewCudaMalloc) {
#ifdef ARCLIGHT_WITH_CUDA
  ARCLIGHT_REQUIRE_GPU_HERE();
  ac::DeviceCachingAllocator& a = ac::device_allocator(0);
  const Tensor host = random_tensor(DType::f32, {64, 1000}, 5);
  std::uint64_t allocs_after_first = 0;
  for (int step = 0; step < 6; ++step) {
    {
      Tensor x = host.to(Device::cuda());
      Tensor y = arclight::empty({128, 3, 32, 32}, DType::f32, Device::cuda());
      Tensor z = arclight::empty({17}, DType::i64, Device::cuda());
      Tensor w = arclight::empty({1, 2, 3}, DType::bf16, Device::cuda());
      Tensor back = x.to(Device::cpu());
      ASSERT_EQ(bytes_of(back), bytes_of(host));
    }
    if (step == 0) allocs_after_first = a.stats().system_allocs;
  }
  const ac::CachingAllocatorStats s = a.stats();
  EXPECT_EQ(s.system_allocs, allocs_after_first) << "cudaMalloc in the steady state";
  EXPECT_GE(s.cache_hits, 5u * 4u);
  EXPECT_GE(s.bytes_cached, ac::caching_size_class(128 * 3 * 32 * 32 * 4));
  // Pinned staging buffers cache the same way.
  ac::PinnedCachingAllocator& pa = ac::pinned_allocator();
  { ac::PinnedBuffer<float> warm(1 << 16); }
  const std::uint64_t pinned_allocs = pa.stats().system_allocs;
  for (int i = 0; i < 4; ++i) {
    ac::PinnedBuffer<float> b(1 << 16);
    ASSERT_NE(b.data(), nullptr);
    for (std::size_t j = 0; j < b.size(); ++j) b.data()[j] = float(j);
    ac::PinnedBuffer<float> moved = std::move(b);
    EXPECT_EQ(b.data(), nullptr);
    EXPECT_EQ(moved.data()[123], 123.f);
  }
  EXPECT_EQ(pa.stats().system_allocs, pinned_allocs) << "cudaHostAlloc in the steady state";
  EXPECT_ERROR_WITH(ac::device_allocator(ac::kMaxDevices + 1), "cuda::device_allocator", "requested but");
#else
  GTEST_SKIP() << "this build has no CUDA backend";
#endif
}

}  // namespace
