// GPU benches of the cuBLAS GEMM and cuDNN convolution launchers (kernels/cuda/launchers_dnn.hpp): the
// production calls, timed with CUDA events after a warm-up, L2 flushed (a memset of twice the L2 size) before
// every timed run, median of --reps runs (default 20). Work is counted as 2·m·n·k FLOPs per GEMM and
// 2·MACs per convolution pass (forward, backward-data and backward-filter each do the forward's MACs), and
// reported in TFLOP/s.
//   * GEMM: 4096³ row-major, f32 with TF32 off, f32 with TF32 on, bf16 inputs with f32 accumulation/output.
//   * Convolutions: efficientnet_b0-like layers at batch 128, 224 px input (stem 3x3 s2 3->32 @224, depthwise
//     3x3 @112 ch 32, depthwise 3x3 s2 and 5x5 s2 @56 ch 144, 5x5 @14 ch 672, 3x3 @7 ch 1152, 1x1 32->16 @112,
//     1x1 192->1152 @7, plus the stem with TF "same" padding, whose odd total pad takes the padded-copy path),
//     each pass in f32 (TF32 off), tf32
//     (f32 tensors, TF32 allowed: PyTorch's default for cuDNN convs) and bf16; the chosen algorithm is shown.
//     The depthwise layers also through arclight's own depthwise kernels (float32), the op layer's default.
//   * Batch norm (train mode, float32, no activation) at efficientnet_b0's BN shapes, batch 128: arclight's
//     kernels (conv_blocks.cuh, the op layer's) beside cuDNN's spatial and spatial-persistent modes, forward
//     (with the running-statistics update) and backward (dx, dweight, dbias); GB/s over the floor (forward reads x
//     and writes y, backward reads x and dy and writes dx), and each cuDNN result's largest difference from
//     arclight's relative to arclight's largest value (y, dx, dweight), so the comparison is of equal work.
// Prints a markdown table on stdout (and to --markdown FILE). Exits 0 with a message when there is no GPU.
// Usage: bench_device_dnn [--reps N] [--search heuristic|benchmark] [--markdown FILE]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "arclight/cuda/dnn.hpp"
#include "arclight/cuda/runtime.hpp"
#include "kernels/common/conv_shape.hpp"
#include "kernels/cuda/launchers_dnn.hpp"
#include "kernels/cuda/launchers_ops.hpp"

namespace kc = arclight::kernels::cuda;
namespace ak = arclight::kernels;
using arclight::DType;

namespace {

void check(cudaError_t st, const char* what) {
  if (st != cudaSuccess) {
    std::fprintf(stderr, "bench_device_dnn: %s failed: %s\n", what, cudaGetErrorString(st));
    std::exit(1);
  }
}

// A device buffer of `bytes` (freed on scope exit).
struct Buf {
  void* p = nullptr;
  explicit Buf(std::size_t bytes) { check(cudaMalloc(&p, std::max<std::size_t>(bytes, 256)), "cudaMalloc"); }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

// Fills `count` elements of `dtype` with uniform [-1, 1) values: a 1M-element random chunk made on the host,
// copied repeatedly (values, not their order, matter for timing).
void fill_random(void* d, std::size_t count, DType dtype, std::uint64_t seed) {
  const std::size_t chunk = std::min<std::size_t>(count, std::size_t(1) << 20);
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> f(chunk);
  for (auto& x : f) x = u(g);
  const std::size_t es = dtype == DType::bf16 ? 2 : 4;
  std::vector<std::uint16_t> b;
  const void* src = f.data();
  if (dtype == DType::bf16) {
    b = arclight::cuda::to_bf16_bits(f);
    src = b.data();
  }
  for (std::size_t off = 0; off < count; off += chunk) {
    const std::size_t n = std::min(chunk, count - off);
    check(cudaMemcpy(static_cast<char*>(d) + off * es, src, n * es, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
}

struct Timer {
  int reps = 20;
  int warmup = 3;
  void* flush = nullptr;
  std::size_t flush_bytes = 0;
  cudaEvent_t start{}, stop{};

  // Median milliseconds of `fn` over reps, L2 flushed before each run.
  double time_ms(const std::function<void()>& fn) {
    for (int i = 0; i < warmup; ++i) fn();
    check(cudaDeviceSynchronize(), "warm-up");
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      check(cudaMemsetAsync(flush, i & 0xFF, flush_bytes), "L2 flush");
      check(cudaEventRecord(start), "cudaEventRecord");
      fn();
      check(cudaEventRecord(stop), "cudaEventRecord");
      check(cudaEventSynchronize(stop), "cudaEventSynchronize");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
      t.push_back(ms);
    }
    check(cudaGetLastError(), "kernels");
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

struct Row {
  std::string op, shape, dtype, pass, algo;
  double ms, flops;
};

struct BnRow {
  std::string shape, impl, pass;
  double ms, bytes, rel_diff;  // rel_diff < 0: the reference itself
};

// max |a - b| / max |a| over two device float arrays of `count` elements.
double rel_diff(const void* a, const void* b, std::size_t count) {
  std::vector<float> ha(count), hb(count);
  check(cudaMemcpy(ha.data(), a, count * 4, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  check(cudaMemcpy(hb.data(), b, count * 4, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < count; ++i) {
    diff = std::max(diff, double(std::fabs(ha[i] - hb[i])));
    scale = std::max(scale, double(std::fabs(ha[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

struct ConvLayer {
  const char* name;
  std::int64_t c_in, hw, c_out, k, stride, groups;
  bool same = false;  // TF "same" padding (else PyTorch's symmetric k/2)
};

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  std::string markdown;
  kc::ConvAlgoSearch search = kc::ConvAlgoSearch::kHeuristic;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--markdown") && i + 1 < argc) {
      markdown = argv[++i];
    } else if (!std::strcmp(argv[i], "--search") && i + 1 < argc) {
      const std::string s = argv[++i];
      if (s == "benchmark") search = kc::ConvAlgoSearch::kBenchmark;
      else if (s != "heuristic") {
        std::fprintf(stderr, "bench_device_dnn: --search must be heuristic or benchmark, got %s\n", s.c_str());
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--reps N] [--search heuristic|benchmark] [--markdown FILE]\n", argv[0]);
      return 2;
    }
  }
  if (!arclight::cuda::available()) {
    std::printf("bench_device_dnn: no GPU here (%s); nothing to measure.\n",
                arclight::cuda::availability().reason.c_str());
    return 0;
  }
  const kc::DeviceInfo dev = kc::device_info(0);
  std::printf("device: %s\n", kc::device_description(0).c_str());
  const std::size_t l2 = std::size_t(dev.l2_cache_bytes > 0 ? dev.l2_cache_bytes : (50 << 20));

  Timer timer;
  timer.reps = reps;
  timer.flush_bytes = 2 * l2;
  check(cudaMalloc(&timer.flush, timer.flush_bytes), "cudaMalloc flush");
  check(cudaEventCreate(&timer.start), "cudaEventCreate");
  check(cudaEventCreate(&timer.stop), "cudaEventCreate");

  std::vector<Row> rows;
  std::vector<BnRow> bn_rows;
  try {
    // ---- GEMM 4096³ ----------------------------------------------------------------------------------------
    {
      const std::int64_t n = 4096;
      Buf a32(std::size_t(n * n) * 4), b32(std::size_t(n * n) * 4), a16(std::size_t(n * n) * 2),
          b16(std::size_t(n * n) * 2), c(std::size_t(n * n) * 4);
      fill_random(a32.p, std::size_t(n * n), DType::f32, 1);
      fill_random(b32.p, std::size_t(n * n), DType::f32, 2);
      fill_random(a16.p, std::size_t(n * n), DType::bf16, 3);
      fill_random(b16.p, std::size_t(n * n), DType::bf16, 4);
      struct G {
        const char* label;
        DType dtype;
        bool tf32;
      };
      for (const G& g : {G{"f32 (TF32 off)", DType::f32, false}, G{"f32 (TF32 on)", DType::f32, true},
                         G{"bf16 -> f32", DType::bf16, false}}) {
        arclight::cuda::DnnSettingsScope settings(arclight::cuda::DnnSettings{false, g.tf32});
        const void* a = g.dtype == DType::bf16 ? a16.p : a32.p;
        const void* b = g.dtype == DType::bf16 ? b16.p : b32.p;
        const double ms = timer.time_ms([&] {
          kc::gemm(false, false, n, n, n, 1.f, a, n, b, n, 0.f, static_cast<float*>(c.p), n, g.dtype, nullptr);
        });
        rows.push_back(Row{"gemm", "4096x4096x4096", g.label, "-", "cublasGemmEx", ms, 2.0 * double(n) * n * n});
      }
    }

    // ---- convolutions ----------------------------------------------------------------------------------------
    const std::int64_t batch = 128;
    const ConvLayer layers[] = {
        {"stem 3x3 s2", 3, 224, 32, 3, 2, 1},
        {"stem 3x3 s2 same", 3, 224, 32, 3, 2, 1, true},
        {"dw 3x3", 32, 112, 32, 3, 1, 32},
        {"dw 3x3 s2", 144, 56, 144, 3, 2, 144},
        {"dw 5x5 s2", 144, 56, 144, 5, 2, 144},  // the tiled kernels' 5x5 path
        {"dw 5x5", 672, 14, 672, 5, 1, 672},     // small planes, several per block
        {"dw 3x3", 1152, 7, 1152, 3, 1, 1152},   // 7x7 planes
        {"pw 1x1", 32, 112, 16, 1, 1, 1},
        {"pw 1x1", 192, 7, 1152, 1, 1, 1},
    };
    struct Variant {
      const char* label;
      DType dtype;
      bool tf32;
    };
    const Variant variants[] = {{"f32", DType::f32, false}, {"tf32", DType::f32, true}, {"bf16", DType::bf16, false}};
    for (const ConvLayer& L : layers) {
      ak::Conv2dParams p;
      p.stride_h = p.stride_w = L.stride;
      p.groups = L.groups;
      if (L.same) p.pad_mode = ak::PadMode::Same;
      else p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = L.k / 2;
      const ak::Conv2dShape s = ak::conv2d_shape(batch, L.c_in, L.hw, L.hw, L.c_out, L.k, L.k, p);
      const std::string shape = arclight::str_cat(L.c_in, "->", L.c_out, " @", L.hw, " -> ", s.out_h, " (pad ",
                                                  s.pad_top, "/", s.pad_bottom, ")");
      for (const Variant& v : variants) {
        arclight::cuda::DnnSettingsScope settings(
            arclight::cuda::DnnSettings{false, v.tf32, kc::kDefaultConvWorkspaceLimit, search});
        const std::size_t es = v.dtype == DType::bf16 ? 2 : 4;
        Buf x(std::size_t(s.input_numel()) * es), w(std::size_t(s.weight_numel()) * es),
            y(std::size_t(s.output_numel()) * es), dy(std::size_t(s.output_numel()) * es),
            dx(std::size_t(s.input_numel()) * es), dw(std::size_t(s.weight_numel()) * es);
        fill_random(x.p, std::size_t(s.input_numel()), v.dtype, 11);
        fill_random(w.p, std::size_t(s.weight_numel()), v.dtype, 12);
        fill_random(dy.p, std::size_t(s.output_numel()), v.dtype, 13);
        const kc::ConvPass passes[] = {kc::ConvPass::kForward, kc::ConvPass::kBackwardData,
                                       kc::ConvPass::kBackwardFilter};
        for (kc::ConvPass pass : passes) {
          const std::size_t bytes = kc::conv2d_workspace_bytes(s, v.dtype, pass);  // selects once
          const kc::ConvAlgoInfo info = kc::conv2d_algo_info(s, v.dtype, pass);
          Buf ws(bytes);
          std::function<void()> fn;
          if (pass == kc::ConvPass::kForward)
            fn = [&] { kc::conv2d_forward(s, v.dtype, x.p, w.p, nullptr, y.p, ws.p, bytes, nullptr); };
          else if (pass == kc::ConvPass::kBackwardData)
            fn = [&] { kc::conv2d_backward_data(s, v.dtype, dy.p, w.p, dx.p, ws.p, bytes, nullptr); };
          else
            fn = [&] { kc::conv2d_backward_filter(s, v.dtype, x.p, dy.p, dw.p, nullptr, ws.p, bytes, nullptr); };
          const double ms = timer.time_ms(fn);
          std::string algo = info.algo_name + (info.padded_copy ? " +pad" : "") +
                             (info.cudnn_workspace > 0 ? arclight::str_cat(" (", info.cudnn_workspace >> 20, " MiB)")
                                                       : std::string());
          rows.push_back(Row{L.name, shape, v.label, kc::conv_pass_name(pass), algo, ms, 2.0 * double(s.macs())});
        }
      }
      // Depthwise layers also through our kernels (kernels/cuda/depthwise.cuh, float32), which the op layer uses
      // for multiplier-1 depthwise convolutions by default, beside cuDNN's rows above.
      if (L.groups == L.c_in && L.c_out == L.c_in) {
        Buf x(std::size_t(s.input_numel()) * 4), w(std::size_t(s.weight_numel()) * 4), y(std::size_t(s.output_numel()) * 4),
            dy(std::size_t(s.output_numel()) * 4), dx(std::size_t(s.input_numel()) * 4),
            dw(std::size_t(s.weight_numel()) * 4),
            ws(std::size_t(kc::depthwise_conv2d_backward_filter_workspace_floats(s)) * 4);
        fill_random(x.p, std::size_t(s.input_numel()), DType::f32, 11);
        fill_random(w.p, std::size_t(s.weight_numel()), DType::f32, 12);
        fill_random(dy.p, std::size_t(s.output_numel()), DType::f32, 13);
        auto* fx = static_cast<float*>(x.p);
        auto* fw = static_cast<float*>(w.p);
        auto* fdy = static_cast<float*>(dy.p);
        const std::pair<kc::ConvPass, std::function<void()>> own[] = {
            {kc::ConvPass::kForward,
             [&] { kc::depthwise_conv2d_forward(s, fx, fw, nullptr, static_cast<float*>(y.p), nullptr); }},
            {kc::ConvPass::kBackwardData,
             [&] { kc::depthwise_conv2d_backward_data(s, fdy, fw, static_cast<float*>(dx.p), nullptr); }},
            {kc::ConvPass::kBackwardFilter, [&] {
               kc::depthwise_conv2d_backward_filter(s, fx, fdy, static_cast<float*>(dw.p), nullptr,
                                                    static_cast<float*>(ws.p), nullptr);
             }}};
        for (const auto& [pass, fn] : own)
          rows.push_back(Row{L.name, shape, "f32", kc::conv_pass_name(pass), "arclight depthwise kernel",
                             timer.time_ms(fn), 2.0 * double(s.macs())});
      }
    }

    // ---- batch norm: arclight's kernels vs cuDNN ----------------------------------------------------------------
    struct BnShape {
      std::int64_t c, hw;
    };
    for (const BnShape& b : {BnShape{32, 112}, BnShape{96, 112}, BnShape{144, 56}, BnShape{240, 28},
                             BnShape{480, 14}, BnShape{1152, 7}}) {
      const kc::BatchNormDims d{batch, b.c, b.hw * b.hw};
      const std::size_t count = std::size_t(d.n * d.c * d.inner), cb = std::size_t(d.c) * 4;
      const std::string shape = arclight::str_cat(b.c, " ch @", b.hw, "x", b.hw);
      const float eps = 1e-3f, momentum = 0.1f;
      Buf x(count * 4), dy(count * 4), w(cb), bias(cb), rm(cb), rv(cb);
      Buf y_ref(count * 4), dx_ref(count * 4), dw_ref(cb), db_ref(cb), sm_ref(cb), si_ref(cb);
      Buf y(count * 4), dx(count * 4), dw(cb), db(cb), sm(cb), si(cb);
      Buf ws(std::size_t(kc::batch_norm_workspace_floats(d)) * 4);
      fill_random(x.p, count, DType::f32, 21);
      fill_random(dy.p, count, DType::f32, 22);
      fill_random(w.p, std::size_t(d.c), DType::f32, 23);
      fill_random(bias.p, std::size_t(d.c), DType::f32, 24);
      fill_random(rm.p, std::size_t(d.c), DType::f32, 25);
      check(cudaMemset(rv.p, 0, cb), "cudaMemset");  // a variance must not be negative: start from 0
      auto f = [](Buf& buf) { return static_cast<float*>(buf.p); };
      const double fwd_bytes = 2.0 * double(count) * 4, bwd_bytes = 3.0 * double(count) * 4;
      // arclight (the reference of the differences)
      const auto ours_fwd = [&] {
        kc::batch_norm_forward_train(d, f(x), f(w), f(bias), eps, momentum, f(rm), f(rv), f(y_ref), f(sm_ref),
                                     f(si_ref), ak::Activation::Identity, f(ws), nullptr);
      };
      const auto ours_bwd = [&] {
        kc::batch_norm_backward_train(d, f(x), f(dy), f(w), f(bias), f(sm_ref), f(si_ref), f(dx_ref), f(dw_ref),
                                      f(db_ref), ak::Activation::Identity, f(ws), nullptr);
      };
      bn_rows.push_back(BnRow{shape, "arclight", "forward", timer.time_ms(ours_fwd), fwd_bytes, -1});
      bn_rows.push_back(BnRow{shape, "arclight", "backward", timer.time_ms(ours_bwd), bwd_bytes, -1});
      ours_fwd();
      ours_bwd();
      for (const bool persistent : {false, true}) {
        const char* impl = persistent ? "cuDNN spatial persistent" : "cuDNN spatial";
        const auto fwd = [&] {
          kc::cudnn_batch_norm_forward_train(d, persistent, f(x), f(w), f(bias), eps, momentum, f(rm), f(rv), f(y),
                                             f(sm), f(si), nullptr);
        };
        const auto bwd = [&] {
          kc::cudnn_batch_norm_backward_train(d, persistent, f(x), f(dy), f(w), eps, f(sm), f(si), f(dx), f(dw),
                                              f(db), nullptr);
        };
        const double fwd_ms = timer.time_ms(fwd), bwd_ms = timer.time_ms(bwd);
        fwd();
        bwd();
        check(cudaDeviceSynchronize(), "batch norm");
        bn_rows.push_back(BnRow{shape, impl, "forward", fwd_ms, fwd_bytes, rel_diff(y_ref.p, y.p, count)});
        bn_rows.push_back(BnRow{shape, impl, "backward", bwd_ms, bwd_bytes,
                                std::max(rel_diff(dx_ref.p, dx.p, count), rel_diff(dw_ref.p, dw.p, std::size_t(d.c)))});
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_device_dnn: %s\n", e.what());
    return 1;
  }

  std::string md = arclight::str_cat("### cuBLAS / cuDNN (", kc::device_description(0), ", batch 128, median of ",
                                     reps, ", L2 flushed, conv algorithm search: ",
                                     search == kc::ConvAlgoSearch::kBenchmark ? "benchmark" : "heuristic", ")\n\n");
  md += "| op | shape | dtype | pass | algorithm | ms | TFLOP/s |\n|---|---|---|---|---|---:|---:|\n";
  for (const Row& r : rows)
    md += arclight::str_cat("| ", r.op, " | ", r.shape, " | ", r.dtype, " | ", r.pass, " | ", r.algo, " | ",
                            fmt("%.3f", r.ms), " | ", fmt("%.1f", r.flops / (r.ms * 1e-3) / 1e12), " |\n");
  md += arclight::str_cat("\n### batch norm, train mode, float32 (batch 128, median of ", reps, ", L2 flushed)\n\n",
                          "| shape | implementation | pass | ms | GB/s (floor) | max diff / max vs arclight |\n",
                          "|---|---|---|---:|---:|---:|\n");
  for (const BnRow& r : bn_rows)
    md += arclight::str_cat("| ", r.shape, " | ", r.impl, " | ", r.pass, " | ", fmt("%.3f", r.ms), " | ",
                            fmt("%.0f", r.bytes / (r.ms * 1e-3) / 1e9), " | ",
                            r.rel_diff < 0 ? std::string("(reference)") : fmt("%.1e", r.rel_diff), " |\n");
  std::printf("\n%s", md.c_str());
  if (!markdown.empty()) {
    std::ofstream f(markdown);
    f << md;
  }
  cudaFree(timer.flush);
  return 0;
}
