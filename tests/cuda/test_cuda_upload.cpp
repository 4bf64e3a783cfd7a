// cuda::BatchUploader (arclight/cuda/upload.hpp): batches staged through a ring of pinned buffers and copied to the
// device asynchronously. Builds in every configuration (executable cuda_host): the CPU destination and the argument
// checks run everywhere; the device round trips skip without a GPU (and run under the CUDA emulator, tests/cuda_emu).
// More uploads than slots are made before any result is read back, so a buffer refilled while its copy was still
// in flight would show up as a wrong earlier tensor.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "arclight/arclight.hpp"
#include "arclight/cuda/upload.hpp"
#include "harness.hpp"

namespace {

using namespace arclight;

std::vector<float> random_floats(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> d(-3.f, 3.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

TEST(BatchUploader, CpuDestinationCopiesTheBytes) {
  cuda::BatchUploader up(2);
  std::vector<float> v = random_floats(24, 1);
  const Tensor t = up.upload(v, {2, 3, 4}, Device::cpu());
  v[0] = 1e30f;  // the tensor owns its copy
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_EQ(t.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(t.to_vector<float>(), random_floats(24, 1));
  EXPECT_EQ(up.device_uploads(), 0);
  const std::vector<std::int64_t> labels{3, 1, 4};
  EXPECT_EQ(up.upload(labels, {3}, Device::cpu()).to_vector<std::int64_t>(), labels);
  EXPECT_EQ(up.upload(std::vector<float>{}, {0, 5}, Device::cpu()).numel(), 0);
}

TEST(BatchUploader, RejectsBadArguments) {
  EXPECT_ERROR_WITH(cuda::BatchUploader(0), "cuda::BatchUploader", "slots >= 1");
  cuda::BatchUploader up;
  EXPECT_ERROR_WITH(up.upload(std::vector<float>(5, 1.f), {2, 3}, Device::cpu()), "cuda::BatchUploader::upload",
                    "expected 6 values", "got 5");
  EXPECT_ERROR_WITH(up.upload(nullptr, {2}, DType::f32, Device::cpu()), "cuda::BatchUploader::upload", "got null");
  if (!cuda::available())
    EXPECT_ERROR_WITH(up.upload(std::vector<float>(2, 1.f), {2}, Device::cuda(0)), "CUDA device requested");
}

TEST(BatchUploader, DeviceUploadsRoundTripThroughTheRing) {
  if (!cuda::available()) GTEST_SKIP() << "CUDA test skipped: " << cuda::availability().reason;
  cuda::BatchUploader up(3);
  std::vector<Tensor> got;
  std::vector<std::vector<float>> want;
  std::vector<float> staging;  // one host vector reused for every batch, as a loader would
  for (int i = 0; i < 10; ++i) {
    const std::size_t n = std::size_t(1000 + 7919 * (i % 4));  // sizes vary, so buffers grow and are reused
    staging = random_floats(n, std::uint64_t(100 + i));
    got.push_back(up.upload(staging, {std::int64_t(n)}, Device::cuda(0)));
    want.push_back(staging);
  }
  EXPECT_EQ(up.device_uploads(), 10);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(got[i].device().is_cuda());
    EXPECT_EQ(got[i].to(Device::cpu()).to_vector<float>(), want[i]) << "upload " << i;
  }
  // consumers on the device see the uploaded values (ordered after the copy on the stream)
  const std::vector<std::int64_t> labels{7, 0, 2, 2};
  const Tensor y = up.upload(labels, {4}, Device::cuda(0));
  EXPECT_EQ(y.to(Device::cpu()).to_vector<std::int64_t>(), labels);
  const Tensor s = ops::sum(ops::mul(got[3], got[3]));
  double ref = 0;
  for (float v : want[3]) ref += double(v) * v;
  EXPECT_NEAR(s.item(), ref, 1e-4 * ref);
}

}  // namespace
