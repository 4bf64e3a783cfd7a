// The CUDA runtime layer (arclight/cuda/runtime.hpp) and the host-side validation of every launcher in
// kernels/cuda/launchers.hpp. Validation happens before any CUDA call, so those tests run (and must pass)
// on machines without a GPU too; the device round trips skip there.
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_test_util.hpp"
#include "harness.hpp"
#include "kernels/cuda/launchers.hpp"

namespace kc = arclight::kernels::cuda;
namespace ak = arclight::kernels;
using arclight::testing::cuda::garbage;

namespace {

// A non-null device-looking pointer for validation paths that must throw before anything is dereferenced.
template <typename T>
T* fake() {
  return reinterpret_cast<T*>(std::uintptr_t(256));
}

TEST(CudaRuntime, ForcedCpuSaysWhy) {
  const char* old = std::getenv("ARCLIGHT_DEVICE");
  const std::string saved = old != nullptr ? old : "";
  setenv("ARCLIGHT_DEVICE", "cpu", 1);
  const arclight::cuda::Availability a = arclight::cuda::detail::probe();
  if (old != nullptr) {
    setenv("ARCLIGHT_DEVICE", saved.c_str(), 1);
  } else {
    unsetenv("ARCLIGHT_DEVICE");
  }
  EXPECT_FALSE(a.available);
  EXPECT_NE(a.reason.find("ARCLIGHT_DEVICE=cpu"), std::string::npos) << a.reason;
}

TEST(CudaRuntime, BackendDescriptionNamesTheBackend) {
  const std::string d = arclight::cuda::backend_description();
  if (arclight::cuda::available()) {
    EXPECT_EQ(d.rfind("cuda: ", 0), 0u) << d;
    EXPECT_NE(d.find("sm_"), std::string::npos) << d;
  } else {
    EXPECT_EQ(d.rfind("cpu (", 0), 0u) << d;
    EXPECT_FALSE(arclight::cuda::availability().reason.empty());
    EXPECT_ERROR_WITH(arclight::cuda::require_available("my_op"), "my_op", "needs a CUDA device");
  }
}

TEST(CudaRuntime, DeviceBufferRoundTrip) {
  ARCLIGHT_REQUIRE_GPU();
  std::vector<float> v{1.5f, -2.f, 3.25f, 1e30f, -0.f};
  arclight::cuda::DeviceBuffer<float> b(v);
  EXPECT_EQ(b.download(), v);
  b.fill_bytes(0xFF);
  for (float x : b.download()) EXPECT_TRUE(std::isnan(x));
  arclight::cuda::DeviceBuffer<float> moved = std::move(b);
  EXPECT_EQ(b.data(), nullptr);
  EXPECT_EQ(moved.size(), v.size());
  EXPECT_ERROR_WITH(moved.upload(std::vector<float>(2)), "expected 5 values, got 2");
}

TEST(CudaValidation, Gem) {
  EXPECT_ERROR_WITH(kc::gem_forward(ak::GemShape{2, 3, 0}, fake<const float>(), fake<const float>(), 1e-6f,
                                    fake<float>(), nullptr),
                    "cuda::gem_forward", "expected a non-empty spatial extent (hw > 0), got hw=0");
  EXPECT_ERROR_WITH(kc::gem_forward(ak::GemShape{2, 3, 4}, fake<const float>(), fake<const float>(), 0.f,
                                    fake<float>(), nullptr),
                    "cuda::gem_forward", "expected a finite clamp eps > 0");
  EXPECT_ERROR_WITH(kc::gem_forward(ak::GemShape{2, 3, 4}, nullptr, fake<const float>(), 1e-6f, fake<float>(), nullptr),
                    "cuda::gem_forward", "expected non-null x, p and y");
  EXPECT_ERROR_WITH(kc::gem_backward(ak::GemShape{2, 3, 4}, fake<const float>(), fake<const float>(),
                                     fake<const float>(), 1e-6f, nullptr, fake<float>(), nullptr, nullptr),
                    "cuda::gem_backward", "dL/dp needs a workspace of");
  EXPECT_GE(kc::gem_backward_workspace_floats(ak::GemShape{64, 2048, 49}), 1);
}

TEST(CudaValidation, CrossEntropyAndArcMargin) {
  ak::CrossEntropyConfig ce;
  ce.label_smoothing = 1.5;
  EXPECT_ERROR_WITH(kc::cross_entropy_forward(ak::CrossEntropyShape{4, 10}, ce, fake<const float>(),
                                              fake<const std::int64_t>(), nullptr, fake<float>(), fake<float>(), nullptr),
                    "cuda::cross_entropy_forward", "expected label_smoothing in [0, 1], got 1.5");
  ce.label_smoothing = 0.1;
  EXPECT_ERROR_WITH(kc::cross_entropy_backward(ak::CrossEntropyShape{4, 0}, ce, fake<const float>(),
                                               fake<const std::int64_t>(), nullptr, fake<const float>(), fake<float>(),
                                               fake<float>(), nullptr),
                    "cuda::cross_entropy_backward", "expected classes > 0, got classes=0");
  EXPECT_ERROR_WITH(kc::cross_entropy_forward(ak::CrossEntropyShape{4, 10}, ce, fake<const float>(),
                                              fake<const std::int64_t>(), nullptr, fake<float>(), nullptr, nullptr),
                    "cuda::cross_entropy_forward", "expected a workspace of 6 floats");
  ak::ArcMarginConfig arc;
  arc.margin = -0.1;
  EXPECT_ERROR_WITH(kc::arc_margin_forward(ak::ArcMarginShape{4, 10, 1}, arc, fake<const float>(),
                                           fake<const std::int64_t>(), nullptr, fake<float>(), nullptr),
                    "cuda::arc_margin_forward", "expected margin m >= 0");
  arc.margin = 0.5;
  arc.scale = 0.0;
  EXPECT_ERROR_WITH(kc::arc_margin_cross_entropy_forward(ak::ArcMarginShape{4, 10, 1}, arc, ce, fake<const float>(),
                                                         fake<const std::int64_t>(), nullptr, nullptr, fake<float>(),
                                                         nullptr, fake<float>(), nullptr),
                    "cuda::arc_margin_cross_entropy_forward", "expected a finite scale s > 0");
  arc.scale = 30.0;
  // A row path that does not exist is refused before any launch.
  EXPECT_ERROR_WITH(kc::arc_margin_cross_entropy_forward(ak::ArcMarginShape{4, 10, 2}, arc, ce, fake<const float>(),
                                                         fake<const std::int64_t>(), nullptr, nullptr, fake<float>(),
                                                         nullptr, fake<float>(), nullptr, kc::RowPath(99)),
                    "cuda::arc_margin_cross_entropy_forward", "unknown row path 99");
  EXPECT_EQ(kc::cross_entropy_workspace_floats(7), 9);
}

TEST(CudaValidation, ScheduleAndOptimizers) {
  ak::ScheduleConfig s;
  s.t_initial = 0.0;
  EXPECT_ERROR_WITH(kc::schedule_lr_device(s, fake<std::int64_t>(), 1, true, fake<float>(), nullptr), "schedule",
                    "expected t_initial > 0");
  s.t_initial = 10.0;
  EXPECT_ERROR_WITH(kc::schedule_lr_device(s, fake<std::int64_t>(), 0, true, fake<float>(), nullptr),
                    "cuda::schedule_lr_device", "expected steps_per_unit >= 1, got 0");
  kc::OptimTensor t;
  t.param = fake<float>();
  t.count = 10;
  ak::SgdConfig sgd;
  sgd.nesterov = true;
  EXPECT_ERROR_WITH(kc::sgd_step(&t, 1, sgd, true, nullptr, nullptr), "sgd_step",
                    "Nesterov momentum requires momentum > 0");
  sgd.nesterov = false;
  EXPECT_ERROR_WITH(kc::sgd_step(&t, 1, sgd, true, nullptr, nullptr), "cuda::sgd_step",
                    "tensor 0: expected non-null param and grad");
  t.grad = fake<const float>();
  sgd.momentum = 0.9;
  EXPECT_ERROR_WITH(kc::sgd_step(&t, 1, sgd, true, nullptr, nullptr), "cuda::sgd_step",
                    "tensor 0: expected its first state buffer (10 floats), got null");
  ak::AdamWConfig adam;
  EXPECT_ERROR_WITH(kc::adamw_step(&t, 1, adam, 0, nullptr, nullptr), "cuda::adamw_step", "expected step >= 1");
  adam.beta1 = 1.0;
  EXPECT_ERROR_WITH(kc::adamw_step(&t, 1, adam, 1, nullptr, nullptr), "adamw_step", "expected beta1 in [0, 1)");
}

}  // namespace
