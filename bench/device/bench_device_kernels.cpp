// GPU benches of arclight's hand-written kernels, llm.c style: each case counts the bytes the kernel must
// move (its floor), times the production launcher (kernels/cuda/launchers.hpp) with CUDA events after a
// warm-up, flushes L2 before every timed run (a memset of a buffer twice the L2 size), and reports the median
// time, GB/s and the percentage of a device-to-device cudaMemcpy measured the same way in the same run. The
// fused ArcMargin+LS-CE runs beside the composed ops (arc_margin_forward -> cross_entropy_forward ->
// cross_entropy_backward -> arc_margin_backward, what autograd would chain), both through the path production
// uses (RowPath::kAuto), and the speed-up is printed. Each row notes whether its main tensor is >= 4x the L2
// size (the condition for the >= 70%-of-copy target; smaller ones are partly served from L2 and shown
// for reference), and a closing "targets" block checks the >= 70% and fused >= 2x composed goals.
// The softmax-row kernels (CE backward, fused head) also run on every RowPath side by side (kStreaming: the row
// read twice; kSmemCache / kSmemCacheWide: part of the row kept in shared memory between the passes), so the
// choice behind kAuto is visible. The exact top-k search (10 000 queries x 60 000 gallery x 512, k = 10) is
// timed beside its GEMMs alone (the selection's share of the time), and the optimizer steps, the AGC clip and the
// AMP gradient unscale as bandwidth kernels.
// Usage: bench_device_kernels [--reps N] [--markdown FILE]   (exits 0 with a message when there is no GPU)
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <utility>
#include <string>
#include <vector>

#include "arclight/cuda/runtime.hpp"
#include "kernels/cuda/launchers.hpp"

namespace kc = arclight::kernels::cuda;
namespace ak = arclight::kernels;

namespace {

void check(cudaError_t st, const char* what) {
  if (st != cudaSuccess) {
    std::fprintf(stderr, "bench_device_kernels: %s failed: %s\n", what, cudaGetErrorString(st));
    std::exit(1);
  }
}

float* alloc_floats(std::size_t n) {
  void* p = nullptr;
  check(cudaMalloc(&p, n * sizeof(float)), "cudaMalloc");
  return static_cast<float*>(p);
}

// Fills device memory with uniform [lo, hi) values (generated on the host once per size).
void fill_uniform(float* d, std::size_t n, float lo, float hi, std::uint64_t seed) {
  std::vector<float> h(n);
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (auto& x : h) x = u(g);
  check(cudaMemcpy(d, h.data(), n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
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
  std::string name, shape;
  double bytes, ms;
  std::string note;
  bool target = false;      // a kernel the >= 70% target applies to
  double tensor_bytes = 0;  // its main tensor (qualifies when >= 4x L2)
};

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  std::string markdown;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--markdown") && i + 1 < argc) markdown = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--reps N] [--markdown FILE]\n", argv[0]);
      return 2;
    }
  }
  if (!arclight::cuda::available()) {
    std::printf("bench_device_kernels: no GPU here (%s); nothing to measure.\n",
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
  std::vector<std::pair<std::string, double>> speedups;  // fused vs composed, per CE shape
  // ---- reference: device-to-device copy of 16x L2 (bytes = read + write) ----
  const std::size_t copy_floats = 16 * l2 / sizeof(float);
  float* ca = alloc_floats(copy_floats);
  float* cb = alloc_floats(copy_floats);
  check(cudaMemset(ca, 0, copy_floats * 4), "memset");
  const double copy_ms =
      timer.time_ms([&] { check(cudaMemcpyAsync(cb, ca, copy_floats * 4, cudaMemcpyDeviceToDevice), "copy"); });
  const double copy_gbs = 2.0 * copy_floats * 4 / (copy_ms * 1e6);
  rows.push_back({"cudaMemcpy D2D (reference)", std::to_string(copy_floats * 4 >> 20) + " MiB",
                  2.0 * copy_floats * 4, copy_ms, ""});
  cudaFree(ca);
  cudaFree(cb);

  // ---- GeM [n, 2048, 7x7], n sized so x >= 8x L2 ----
  {
    const std::int64_t c = 2048, hw = 49;
    const std::int64_t n = std::int64_t((8 * l2) / std::size_t(4 * c * hw)) + 1;
    const ak::GemShape s{n, c, hw};
    const std::size_t xs = std::size_t(n * c * hw), ys = std::size_t(n * c);
    float* x = alloc_floats(xs);
    float* gx = alloc_floats(xs);
    float* y = alloc_floats(ys);
    float* gy = alloc_floats(ys);
    float* p = alloc_floats(1);
    float* gp = alloc_floats(1);
    float* ws = alloc_floats(std::size_t(kc::gem_backward_workspace_floats(s)));
    fill_uniform(x, xs, -0.1f, 3.f, 1);
    fill_uniform(gy, ys, -1.f, 1.f, 2);
    const float p0 = 3.f;
    check(cudaMemcpy(p, &p0, 4, cudaMemcpyHostToDevice), "p");
    const std::string shape = std::to_string(n) + "x" + std::to_string(c) + "x7x7";
    rows.push_back({"gem_forward", shape, 4.0 * (xs + ys),
                    timer.time_ms([&] { kc::gem_forward(s, x, p, 1e-6f, y, nullptr); }), "", true, 4.0 * xs});
    rows.push_back({"gem_backward (gx + gp)", shape, 4.0 * (2 * xs + ys),
                    timer.time_ms([&] { kc::gem_backward(s, x, gy, p, 1e-6f, gx, gp, ws, nullptr); }), "", true,
                    4.0 * xs});
    for (float* q : {x, gx, y, gy, p, gp, ws}) cudaFree(q);
  }

  // ---- LS-CE and ArcMargin + LS-CE on n x 100000 ----
  for (std::int64_t n : {256, 1024}) {
    const std::int64_t classes = 100000;
    const std::size_t e = std::size_t(n * classes);
    float* cos = alloc_floats(e);
    float* logits = alloc_floats(e);
    float* glogits = alloc_floats(e);
    float* gcos = alloc_floats(e);
    float* loss = alloc_floats(1);
    float* unit = alloc_floats(1);
    float* ws = alloc_floats(std::size_t(kc::cross_entropy_workspace_floats(n)));
    std::int64_t* labels = nullptr;
    check(cudaMalloc(reinterpret_cast<void**>(&labels), std::size_t(n) * 8), "cudaMalloc labels");
    {
      std::vector<std::int64_t> h(static_cast<std::size_t>(n));
      std::mt19937_64 g(7);
      for (auto& v : h) v = std::int64_t(g() % std::uint64_t(classes));
      check(cudaMemcpy(labels, h.data(), h.size() * 8, cudaMemcpyHostToDevice), "labels");
      const float one = 1.f;
      check(cudaMemcpy(unit, &one, 4, cudaMemcpyHostToDevice), "unit");
    }
    fill_uniform(cos, e, -1.f, 1.f, 3);
    const std::string shape = std::to_string(n) + "x" + std::to_string(classes);
    ak::ArcMarginConfig arc;  // ArcFace s = 30, m = 0.5
    ak::CrossEntropyConfig ce{0.1, ak::Reduction::kMean};
    const ak::ArcMarginShape as{n, classes, 1};
    const ak::CrossEntropyShape cs{n, classes};
    kc::arc_margin_forward(as, arc, cos, labels, nullptr, logits, nullptr);
    // Every explicit row path, for reference (the production rows below use kAuto).
    const std::pair<kc::RowPath, const char*> paths[] = {{kc::RowPath::kStreaming, "streaming"},
                                                         {kc::RowPath::kSmemCache, "smem cache"},
                                                         {kc::RowPath::kSmemCacheWide, "smem cache wide"}};
    for (const auto& [rp, tag] : paths) {
      rows.push_back({std::string("  cross_entropy_backward [") + tag + "]", shape, 8.0 * e,
                      timer.time_ms([&] {
                        kc::cross_entropy_backward(cs, ce, logits, labels, nullptr, unit, glogits, ws, nullptr, rp);
                      }),
                      "RowPath reference", false, 4.0 * e});
      rows.push_back({std::string("  fused fwd+grad [") + tag + "]", shape, 8.0 * e,
                      timer.time_ms([&] {
                        kc::arc_margin_cross_entropy_forward(as, arc, ce, cos, labels, nullptr, nullptr, loss, gcos,
                                                             ws, nullptr, rp);
                      }),
                      "RowPath reference", false, 4.0 * e});
    }
    // The production path (kAuto) for every row, fused and composed alike.
    const kc::RowPath path = kc::RowPath::kAuto;
    rows.push_back({"cross_entropy_forward", shape, 4.0 * e,
                    timer.time_ms([&] {
                      kc::cross_entropy_forward(cs, ce, logits, labels, nullptr, loss, ws, nullptr, path);
                    }),
                    "", true, 4.0 * e});
    rows.push_back({"cross_entropy_backward", shape, 8.0 * e,
                    timer.time_ms([&] {
                      kc::cross_entropy_backward(cs, ce, logits, labels, nullptr, unit, glogits, ws, nullptr, path);
                    }),
                    "", true, 4.0 * e});
    rows.push_back({"arc_margin_cross_entropy fused fwd+grad", shape, 8.0 * e,
                    timer.time_ms([&] {
                      kc::arc_margin_cross_entropy_forward(as, arc, ce, cos, labels, nullptr, nullptr, loss, gcos, ws,
                                                           nullptr, path);
                    }),
                    "", true, 4.0 * e});
    const double fused_ms = rows.back().ms;
    const double composed_ms = timer.time_ms([&] {
      kc::arc_margin_forward(as, arc, cos, labels, nullptr, logits, nullptr);
      kc::cross_entropy_forward(cs, ce, logits, labels, nullptr, loss, ws, nullptr, path);
      kc::cross_entropy_backward(cs, ce, logits, labels, nullptr, unit, glogits, ws, nullptr, path);
      kc::arc_margin_backward(as, arc, cos, labels, nullptr, glogits, gcos, nullptr);
    });
    char note[96];
    std::snprintf(note, sizeof note, "fused is %.2fx faster (both kAuto)", composed_ms / fused_ms);
    rows.push_back({"arc_margin + LS-CE composed (4 ops)", shape, 8.0 * e, composed_ms, note, false, 4.0 * e});
    speedups.push_back({shape, composed_ms / fused_ms});
    for (float* q : {cos, logits, glogits, gcos, loss, unit, ws}) cudaFree(q);
    cudaFree(labels);
  }

  // ---- fused optimizer steps over 64 tensors, 8x L2 of parameters in all ----
  {
    const int tensors = 64;
    const std::size_t per = (8 * l2 / 4) / tensors;
    std::vector<float*> bufs;
    std::vector<kc::OptimTensor> ts(tensors);
    for (auto& t : ts) {
      float* p = alloc_floats(per);
      float* g = alloc_floats(per);
      float* m = alloc_floats(per);
      float* v = alloc_floats(per);
      fill_uniform(p, per, -1.f, 1.f, 11);
      check(cudaMemset(g, 0, per * 4), "memset");
      check(cudaMemset(m, 0, per * 4), "memset");
      check(cudaMemset(v, 0, per * 4), "memset");
      t.param = p;
      t.grad = g;
      t.buf0 = m;
      t.buf1 = v;
      t.count = std::int64_t(per);
      bufs.insert(bufs.end(), {p, g, m, v});
    }
    const double total = double(per) * tensors;
    const std::string shape = std::to_string(tensors) + " x " + std::to_string(per);
    ak::SgdConfig sgd;
    sgd.lr = 0.01;
    sgd.momentum = 0.9;
    sgd.nesterov = true;
    sgd.weight_decay = 1e-4;
    rows.push_back({"sgd_step nesterov (multi-tensor)", shape, 20.0 * total,
                    timer.time_ms([&] { kc::sgd_step(ts.data(), tensors, sgd, false, nullptr, nullptr); }), ""});
    ak::AdamWConfig adam;
    rows.push_back({"adamw_step (multi-tensor)", shape, 28.0 * total,
                    timer.time_ms([&] { kc::adamw_step(ts.data(), tensors, adam, 10, nullptr, nullptr); }), ""});
    // AGC over the same tensors viewed as conv weights [units, 288] (one warp per unit). The gradients are zero, so
    // no unit clips and the data stay the same run after run: the floor is reading w and g once.
    std::vector<kc::AgcTensor> agc(tensors);
    for (int i = 0; i < tensors; ++i) {
      agc[std::size_t(i)].param = ts[std::size_t(i)].param;
      agc[std::size_t(i)].grad = const_cast<float*>(ts[std::size_t(i)].grad);
      agc[std::size_t(i)].unit_size = 288;
      agc[std::size_t(i)].units = std::int64_t(per) / 288;
    }
    const double agc_total = double(std::int64_t(per) / 288 * 288) * tensors;
    rows.push_back({"agc_clip (multi-tensor, units of 288)", shape, 8.0 * agc_total,
                    timer.time_ms([&] { kc::agc_clip(agc.data(), tensors, ak::AgcConfig{}, nullptr); }), ""});
    for (float* q : bufs) cudaFree(q);
  }

  // ---- AMP gradient unscale over 64 tensors, 8x L2 of gradients in all ----
  {
    const int tensors = 64;
    const std::size_t per = (8 * l2 / 4) / tensors;
    std::vector<float*> bufs;
    std::vector<kc::AmpTensor> ts(tensors);
    for (auto& t : ts) {
      float* g = alloc_floats(per);
      fill_uniform(g, per, -1.f, 1.f, 21);
      t = {g, std::int64_t(per)};
      bufs.push_back(g);
    }
    float* flags = alloc_floats(2);
    const float h[2] = {1.f, 0.f};  // inv_scale 1: the gradients keep their values run after run
    check(cudaMemcpy(flags, h, sizeof h, cudaMemcpyHostToDevice), "flags");
    rows.push_back({"amp_unscale (multi-tensor)", std::to_string(tensors) + " x " + std::to_string(per),
                    8.0 * double(per) * tensors,
                    timer.time_ms([&] { kc::amp_unscale(ts.data(), tensors, flags, flags + 1, nullptr); }), ""});
    for (float* q : bufs) cudaFree(q);
    cudaFree(flags);
  }

  // ---- exact top-k search: 10 000 queries x 60 000 gallery x 512, k = 10 ----
  std::string search_table =
      "\n| top-k search (cosine, k=10) | query_block x gallery_block | search ms | GEMMs alone ms | search / GEMMs | "
      "GEMM TFLOP/s |\n|---|---|---:|---:|---:|---:|\n";
  {
    const std::int64_t nq = 10000, ng = 60000, d = 512;
    float* q = alloc_floats(std::size_t(nq * d));
    float* g = alloc_floats(std::size_t(ng * d));
    fill_uniform(q, std::size_t(nq * d), -1.f, 1.f, 31);
    fill_uniform(g, std::size_t(ng * d), -1.f, 1.f, 32);
    float* out_s = alloc_floats(std::size_t(nq * 10));
    std::int64_t* out_i = nullptr;
    check(cudaMalloc(reinterpret_cast<void**>(&out_i), std::size_t(nq * 10) * 8), "cudaMalloc indices");
    const std::int64_t blocks[][2] = {{1024, 16384}, {2048, 32768}};
    for (const auto& b : blocks) {
      kc::TopkSearchShape s{nq, ng, d, 10, b[0], b[1]};
      float* ws = alloc_floats(std::size_t(kc::topk_search_workspace_floats(s)));
      const double search_ms = timer.time_ms(
          [&] { kc::topk_search(s, kc::SearchMetric::kCosine, q, g, out_s, out_i, ws, nullptr); });
      const double gemm_ms = timer.time_ms([&] { kc::topk_search_gemm_only(s, q, g, ws, nullptr); });
      char line[256];
      std::snprintf(line, sizeof line, "| %lldx%lldx%lld | %lld x %lld | %.2f | %.2f | %.0f%% | %.1f |\n",
                    (long long)nq, (long long)ng, (long long)d, (long long)b[0], (long long)b[1], search_ms, gemm_ms,
                    100.0 * search_ms / gemm_ms, 2.0 * double(nq) * ng * d / (gemm_ms * 1e9));
      search_table += line;
      cudaFree(ws);
    }
    cudaFree(q);
    cudaFree(g);
    cudaFree(out_s);
    cudaFree(out_i);
  }

  // ---- report ----
  const double big = 4.0 * double(l2);
  std::string table = "| kernel | shape | MB moved (floor) | median µs | GB/s | % of D2D copy | tensor >= 4x L2 | note |\n"
                      "|---|---|---:|---:|---:|---:|---|---|\n";
  std::string targets;
  for (const Row& r : rows) {
    const double gbs = r.bytes / (r.ms * 1e6);
    const double pct = 100.0 * gbs / copy_gbs;
    const bool qualifies = r.tensor_bytes >= big;
    char line[640];
    std::snprintf(line, sizeof line, "| %s | %s | %.1f | %.1f | %.0f | %.0f%% | %s | %s |\n", r.name.c_str(),
                  r.shape.c_str(), r.bytes / 1e6, r.ms * 1e3, gbs, pct,
                  r.tensor_bytes <= 0 ? "" : (qualifies ? "yes" : "no (reference)"), r.note.c_str());
    table += line;
    if (r.target && qualifies) {
      std::snprintf(line, sizeof line, "- %s %s: %.0f%% of copy (target >= 70%%): %s\n", r.name.c_str(),
                    r.shape.c_str(), pct, pct >= 70.0 ? "MET" : "NOT MET");
      targets += line;
    }
  }
  for (const auto& [shape, x] : speedups) {
    char line[160];
    std::snprintf(line, sizeof line, "- fused vs composed %s: %.2fx (target >= 2x): %s\n", shape.c_str(), x,
                  x >= 2.0 ? "MET" : "NOT MET");
    targets += line;
  }
  char hdr[160];
  std::snprintf(hdr, sizeof hdr, "\nTargets (tensors >= 4x L2 = %.0f MiB only):\n", big / double(1 << 20));
  table += hdr + targets + search_table;
  std::printf("\n%s\n(L2 %zu MiB flushed before every timed run; median of %d runs after %d warm-ups)\n", table.c_str(),
              l2 >> 20, timer.reps, timer.warmup);
  if (!markdown.empty()) {
    std::ofstream f(markdown);
    f << "GPU: " << kc::device_description(0) << "\n\n" << table;
  }
  check(cudaDeviceSynchronize(), "final sync");
  return 0;
}
