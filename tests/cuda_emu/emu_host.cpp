// CUDA emulation for the tests (tests/cuda_emu): every other function of kernels/cuda/launchers.hpp / launchers_dnn.hpp over host
// memory ("device memory" = host memory), mostly through the CPU kernels of kernels/cpu/.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "arclight/core/error.hpp"
#include "kernels/common/bf16_math.hpp"
#include "kernels/common/f16_math.hpp"
#include "kernels/cpu/conv2d.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cuda/launchers.hpp"
#include "kernels/cuda/launchers_dnn.hpp"
#include "kernels/cuda/launchers_ops.hpp"

namespace arclight::kernels::cuda {

namespace {
[[noreturn]] void not_emulated(const char* what) { ::arclight::fail(what, "not emulated"); }
std::atomic<std::int64_t> g_allocs{0};
}  // namespace

// ---- runtime primitives ----
int device_count(std::string* why) {
  if (why) why->clear();
  return 1;
}
std::string device_description(int) { return "EMULATED CUDA device (host memory, fibers)"; }
DeviceInfo device_info(int) {
  DeviceInfo d;
  d.name = "EMU";
  d.major = 9;
  d.minor = 0;
  d.multiprocessors = 132;
  d.l2_cache_bytes = 50 << 20;
  d.global_memory_bytes = std::int64_t(80) << 30;
  return d;
}
void set_device(int device) { ARCLIGHT_CHECK(device == 0, "cuda::set_device", "device ", device, " of 1"); }
int get_device() { return 0; }
void* device_malloc(std::size_t bytes, const char*) {
  ++g_allocs;
  const std::size_t b = (bytes + 255) / 256 * 256 + 256;
  void* p = std::aligned_alloc(256, b);
  std::memset(p, 0xA5, b);  // not zero: forgotten writes show
  return p;
}
void device_free(void* p) noexcept { std::free(p); }
void* pinned_host_malloc(std::size_t bytes, const char*) { return bytes ? std::aligned_alloc(256, (bytes + 255) / 256 * 256) : nullptr; }
void pinned_host_free(void* p) noexcept { std::free(p); }
void memcpy_host_to_device(void* d, const void* s, std::size_t b, Stream, const char*) { if (b) std::memcpy(d, s, b); }
void memcpy_device_to_host(void* d, const void* s, std::size_t b, Stream, const char*) { if (b) std::memcpy(d, s, b); }
void memcpy_device_to_device(void* d, const void* s, std::size_t b, Stream, const char*) { if (b) std::memmove(d, s, b); }
void memset_device(void* d, int v, std::size_t b, Stream, const char*) { if (b) std::memset(d, v, b); }
void synchronize(Stream, const char*) {}
Stream stream_create(const char*) { static char dummy[16]; return reinterpret_cast<Stream>(&dummy[0]); }
// Copies and kernels complete before their call returns here, so an event is always complete.
Event event_create(const char*) { static char dummy[16]; return reinterpret_cast<Event>(&dummy[0]); }
void event_record(Event, Stream, const char*) {}
void event_synchronize(Event, const char*) {}
void event_destroy(Event) noexcept {}
void stream_destroy(Stream) noexcept {}

// ---- dnn settings ----
namespace {
std::atomic<bool> g_det{false}, g_tf32{false};
std::atomic<std::size_t> g_ws_limit{kDefaultConvWorkspaceLimit};
std::atomic<int> g_search{0};
std::mutex g_cache_mu;
std::map<std::tuple<std::vector<std::int64_t>, int, int, bool, bool, int>, ConvAlgoInfo> g_cache;
ConvAlgoCacheStats g_stats;
}  // namespace
void set_dnn_deterministic(bool on) { g_det = on; }
bool dnn_deterministic() { return g_det; }
void set_allow_tf32(bool on) { g_tf32 = on; }
bool allow_tf32() { return g_tf32; }
void set_conv_workspace_limit(std::size_t bytes) { g_ws_limit = bytes; }
std::size_t conv_workspace_limit() { return g_ws_limit; }
void set_conv_algo_search(ConvAlgoSearch s) { g_search = int(s); }
ConvAlgoSearch conv_algo_search() { return ConvAlgoSearch(g_search.load()); }
void release_dnn_handles() noexcept {}
const char* conv_pass_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::kForward: return "forward";
    case ConvPass::kBackwardData: return "backward_data";
    case ConvPass::kBackwardFilter: return "backward_filter";
  }
  return "?";
}

// ---- GEMM (host BLAS on float copies) ----
namespace {
void check_dtype(DType dtype, const char* op) {
  ARCLIGHT_CHECK(dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16, op, "dtype ", dtype_name(dtype),
                 "; expected f32, bf16 or f16");
}
// Float view of `count` elements at p (bf16 / f16 converted exactly; f32 copied so the CPU kernels never alias).
// Like cuDNN / cuBLAS with float32 accumulation, the CPU kernels then compute in float32.
std::vector<float> as_float(const void* p, std::int64_t count, DType dtype) {
  std::vector<float> v(std::size_t(count > 0 ? count : 0));
  if (count <= 0) return v;
  if (dtype == DType::f32) {
    std::memcpy(v.data(), p, std::size_t(count) * 4);
  } else {
    const auto* b = static_cast<const std::uint16_t*>(p);
    for (std::int64_t i = 0; i < count; ++i)
      v[std::size_t(i)] = dtype == DType::f16 ? f16_bits_to_float(b[i]) : bf16_bits_to_float(b[i]);
  }
  return v;
}
// Stores float32 results in `dtype` (bf16 / f16: rounded to nearest even once, as the libraries' epilogues do; f16
// overflows to ±inf).
void store(const std::vector<float>& v, void* p, DType dtype) {
  if (v.empty()) return;
  if (dtype == DType::f32) {
    std::memcpy(p, v.data(), v.size() * 4);
  } else {
    auto* b = static_cast<std::uint16_t*>(p);
    for (std::size_t i = 0; i < v.size(); ++i)
      b[i] = dtype == DType::f16 ? float_to_f16_bits(v[i]) : float_to_bf16_bits(v[i]);
  }
}
std::int64_t stored(std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  return rows <= 0 || cols <= 0 ? 0 : (rows - 1) * ld + cols;
}
void one_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const void* a,
              std::int64_t lda, const void* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc, DType dtype) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.f ? 0.f : beta * c[i * ldc + j];
    return;
  }
  const auto av = as_float(a, ta ? stored(k, m, lda) : stored(m, k, lda), dtype);
  const auto bv = as_float(b, tb ? stored(n, k, ldb) : stored(k, n, ldb), dtype);
  if (beta == 0.f)
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = 0.f;
  cpu::gemm<float>(ta, tb, m, n, k, alpha, av.data(), lda, bv.data(), ldb, beta, c, ldc);
}
}  // namespace

void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const void* a,
          std::int64_t lda, const void* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc, DType dtype,
          Stream) {
  check_dtype(dtype, "cuda::gemm");
  ARCLIGHT_CHECK(m >= 0 && n >= 0 && k >= 0, "cuda::gemm", "negative size");
  ARCLIGHT_CHECK(ldc >= n && lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n), "cuda::gemm", "bad leading dims");
  one_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, dtype);
}
void gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                          const void* a, std::int64_t lda, std::int64_t stride_a, const void* b, std::int64_t ldb,
                          std::int64_t stride_b, float beta, float* c, std::int64_t ldc, std::int64_t stride_c,
                          std::int64_t batch, DType dtype, Stream) {
  check_dtype(dtype, "cuda::gemm_strided_batched");
  ARCLIGHT_CHECK(m >= 0 && n >= 0 && k >= 0 && batch >= 0 && stride_a >= 0 && stride_b >= 0 && stride_c >= 0,
                 "cuda::gemm_strided_batched", "negative size or stride");
  ARCLIGHT_CHECK(ldc >= n && lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n), "cuda::gemm_strided_batched",
                 "bad leading dims");
  const std::size_t es = dtype == DType::f32 ? 4 : 2;
  for (std::int64_t i = 0; i < batch; ++i)
    one_gemm(trans_a, trans_b, m, n, k, alpha, static_cast<const char*>(a) + std::size_t(i * stride_a) * es, lda,
             static_cast<const char*>(b) + std::size_t(i * stride_b) * es, ldb, beta, c + i * stride_c, ldc, dtype);
}

// ---- convolution (CPU kernels on float copies) ----
namespace {
constexpr std::size_t kEmuWorkspace = 256;
ConvAlgoInfo lookup(const Conv2dShape& s, DType dtype, ConvPass pass) {
  cpu::check_conv2d_shape(s, "cuda::conv2d");
  check_dtype(dtype, "cuda::conv2d");
  std::lock_guard<std::mutex> lock(g_cache_mu);
  const auto key = std::make_tuple(std::vector<std::int64_t>{s.n, s.c_in, s.h, s.w, s.c_out, s.kh, s.kw, s.stride_h,
                                                             s.stride_w, s.pad_top, s.pad_bottom, s.pad_left,
                                                             s.pad_right, s.dilation_h, s.dilation_w, s.groups},
                                   int(dtype), int(pass), bool(g_det), bool(g_tf32), int(g_search));
  auto it = g_cache.find(key);
  if (it != g_cache.end()) {
    ++g_stats.hits;
    return it->second;
  }
  ++g_stats.misses;
  ConvAlgoInfo info;
  info.algo = 0;
  info.algo_name = "EMU_CPU";
  info.deterministic = true;
  info.workspace_bytes = kEmuWorkspace;
  info.padded_copy = s.pad_top != s.pad_bottom || s.pad_left != s.pad_right;
  g_cache[key] = info;
  g_stats.entries = std::int64_t(g_cache.size());
  return info;
}
void check_ws(const char* op, void* ws, std::size_t bytes) {
  ARCLIGHT_CHECK(bytes >= kEmuWorkspace && ws != nullptr, op, "workspace of ", bytes, " bytes at ", ws,
                 "; expected >= ", kEmuWorkspace);
  ARCLIGHT_CHECK(reinterpret_cast<std::uintptr_t>(ws) % 256 == 0, op, "workspace not 256-byte aligned");
}
}  // namespace
ConvAlgoCacheStats conv_algo_cache_stats() {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  return g_stats;
}
void conv_algo_cache_clear() {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  g_cache.clear();
  g_stats = {};
}
std::size_t conv2d_workspace_bytes(const Conv2dShape& s, DType dtype, ConvPass pass) {
  return lookup(s, dtype, pass).workspace_bytes;
}
ConvAlgoInfo conv2d_algo_info(const Conv2dShape& s, DType dtype, ConvPass pass) { return lookup(s, dtype, pass); }
void conv2d_forward(const Conv2dShape& s, DType dtype, const void* x, const void* w, const float* bias, void* y,
                    void* workspace, std::size_t workspace_bytes, Stream) {
  lookup(s, dtype, ConvPass::kForward);
  check_ws("cuda::conv2d_forward", workspace, workspace_bytes);
  const auto xv = as_float(x, s.input_numel(), dtype);
  const auto wv = as_float(w, s.weight_numel(), dtype);
  std::vector<float> yv(std::size_t(s.output_numel()));
  cpu::conv2d_forward<float>(s, xv.data(), wv.data(), nullptr, yv.data());
  store(yv, y, dtype);
  if (bias == nullptr) return;
  // As on the device: cuDNN writes the convolution rounded to `dtype`, then the bias kernel adds the float32 bias
  // and rounds again (two roundings under autocast; exact for float32).
  yv = as_float(y, s.output_numel(), dtype);
  const std::int64_t plane = s.out_h * s.out_w;
  for (std::int64_t i = 0; i < s.output_numel(); ++i) yv[std::size_t(i)] += bias[(i / plane) % s.c_out];
  store(yv, y, dtype);
}
void conv2d_backward_data(const Conv2dShape& s, DType dtype, const void* dy, const void* w, void* dx, void* workspace,
                          std::size_t workspace_bytes, Stream) {
  lookup(s, dtype, ConvPass::kBackwardData);
  check_ws("cuda::conv2d_backward_data", workspace, workspace_bytes);
  const auto dyv = as_float(dy, s.output_numel(), dtype);
  const auto wv = as_float(w, s.weight_numel(), dtype);
  std::vector<float> dxv(std::size_t(s.input_numel()));
  cpu::conv2d_backward_data<float>(s, dyv.data(), wv.data(), dxv.data());
  store(dxv, dx, dtype);
}
void conv2d_backward_filter(const Conv2dShape& s, DType dtype, const void* x, const void* dy, void* dw, float* dbias,
                            void* workspace, std::size_t workspace_bytes, Stream) {
  lookup(s, dtype, ConvPass::kBackwardFilter);
  check_ws("cuda::conv2d_backward_filter", workspace, workspace_bytes);
  if (!dw && !dbias) return;
  const auto xv = as_float(x, s.input_numel(), dtype);
  const auto dyv = as_float(dy, s.output_numel(), dtype);
  std::vector<float> dwv(std::size_t(s.weight_numel()));
  cpu::conv2d_backward_weight<float>(s, xv.data(), dyv.data(), dw ? dwv.data() : nullptr, dbias);
  if (dw) store(dwv, dw, dtype);
}

}  // namespace arclight::kernels::cuda
