// Exact cosine search. A FlatIndex holds L2-normalised gallery embeddings [G, D] with their labels; a
// search scores query blocks against gallery blocks with one BLAS GEMM per block pair (so memory stays
// bounded by block sizes: the Q × G score matrix is never materialised) and keeps a per-query partial
// top-k (a k-entry heap per query, updated while the score tile is still in cache). Ties are broken by the
// lower gallery index, so results are deterministic and independent of the thread count. Threads:
// OpenMP threads, each running a single-threaded GEMM and the selection on its own tile (see search()).
// bench/bench_search.cpp compares it with FAISS's IndexFlatIP (bench/RESULTS.md).
#pragma once

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <vector>

#include <omp.h>

#include "arclight/arclight.hpp"
#include "arclight/io/safetensors.hpp"
#include "kernels/cpu/gemm.hpp"


namespace arclight::retrieval {

struct SearchResult {
  Tensor scores;   // [Q, k] f32, best first
  Tensor indices;  // [Q, k] i64 gallery rows
};

// Where a search spent its time (filled only when SearchOptions::stats points at one; accumulates).
struct SearchStats {
  double gemm_seconds = 0;    // the BLAS score blocks
  double select_seconds = 0;  // the per-query top-k updates
};

// Block sizes bound the memory a search needs: one query_block × gallery_block f32 score tile plus
// query_block × k running results, whatever Q and G are. The defaults keep the tile (2 MiB) near the size of
// a core's L2 so that the selection pass reads it back from cache, while each GEMM stays large enough
// (512 × 1024 × D) to run at full BLAS speed. On the 2-core dev machine (bench/RESULTS.md) 512 × 1024 beat
// 256 × 2048 by ~4 % and 256 × 1024 / 128 × 2048 were no better; bench_search --query-block/--gallery-block
// measures other choices.
struct SearchOptions {
  std::int64_t query_block = 512;
  std::int64_t gallery_block = 1024;
  SearchStats* stats = nullptr;
};

namespace detail {

// A running top-k of one query: a binary heap whose root is the current WORST entry (lowest score, then
// highest gallery index), so "is this candidate good enough?" is one comparison with the root. Unused
// slots hold (-inf, -1), which every finite score beats.
inline bool topk_worse(float sa, std::int64_t ia, float sb, std::int64_t ib) {
  return sa < sb || (sa == sb && ia > ib);
}

// Replaces the root with (s, idx) and restores the heap. requires: (s, idx) is better than the root.
inline void topk_replace_root(float* hs, std::int64_t* hi, std::int64_t k, float s, std::int64_t idx) {
  std::int64_t pos = 0;
  for (;;) {
    const std::int64_t l = 2 * pos + 1, r = l + 1;
    if (l >= k) break;
    std::int64_t c = l;  // the worse child moves up
    if (r < k && topk_worse(hs[r], hi[r], hs[l], hi[l])) c = r;
    if (!topk_worse(hs[c], hi[c], s, idx)) break;
    hs[pos] = hs[c];
    hi[pos] = hi[c];
    pos = c;
  }
  hs[pos] = s;
  hi[pos] = idx;
}

// Offers row[0, n) (gallery indices base, base+1, ...) to one query's top-k. Candidates arrive in
// increasing index order, so one that only ties the root's score has a higher index than every kept entry
// and loses the tie: a strict > test is exact. NaN never passes it. Chunks of 16 are first tested together
// (a branch-free compare the compiler vectorises), since almost every chunk holds no candidate.
inline void topk_offer_row(const float* row, std::int64_t n, std::int64_t base, float* hs, std::int64_t* hi,
                           std::int64_t k) {
  float thr = hs[0];
  std::int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    int any = 0;
    for (int t = 0; t < 16; ++t) any |= row[j + t] > thr;
    if (!any) continue;
    for (std::int64_t t = j; t < j + 16; ++t)
      if (row[t] > thr) {
        topk_replace_root(hs, hi, k, row[t], base + t);
        thr = hs[0];
      }
  }
  for (; j < n; ++j)
    if (row[j] > thr) {
      topk_replace_root(hs, hi, k, row[j], base + j);
      thr = hs[0];
    }
}


}  // namespace detail

class FlatIndex {
 public:
  FlatIndex() = default;
  // requires: embeddings [G, D] f32 (normalised here); labels empty or G integer labels.
  FlatIndex(const Tensor& embeddings, std::vector<std::int64_t> labels = {}) { add(embeddings, std::move(labels)); }

  // Appends rows (normalised copies).
  void add(const Tensor& embeddings, std::vector<std::int64_t> labels = {}) {
    ARCLIGHT_CHECK(embeddings.dim() == 2, "FlatIndex::add", "expected embeddings [G, D], got ", embeddings.str());
    ARCLIGHT_CHECK(embeddings.dtype() == DType::f32, "FlatIndex::add", "expected f32 embeddings, got ", embeddings.str());
    ARCLIGHT_CHECK(dim_ == 0 || embeddings.shape()[1] == dim_, "FlatIndex::add", "dimension ", embeddings.shape()[1],
                   " differs from the index's ", dim_);
    ARCLIGHT_CHECK(labels.empty() || static_cast<std::int64_t>(labels.size()) == embeddings.shape()[0],
                   "FlatIndex::add", labels.size(), " labels for ", embeddings.shape()[0], " embeddings");
    ARCLIGHT_CHECK(labels.empty() == labels_.empty() || size() == 0, "FlatIndex::add",
                   "either every batch has labels or none has");
    NoGradGuard ng;
    Tensor normed = ops::contiguous(ops::l2_normalize(embeddings, 1));
    dim_ = embeddings.shape()[1];
    data_ = data_.defined() ? ops::cat({data_, normed}, 0) : normed;
    labels_.insert(labels_.end(), labels.begin(), labels.end());
  }

  std::int64_t size() const { return data_.defined() ? data_.shape()[0] : 0; }
  std::int64_t dim() const { return dim_; }
  const Tensor& embeddings() const { return data_; }
  const std::vector<std::int64_t>& labels() const { return labels_; }

  // The k most similar gallery rows of each query (cosine similarity; queries are normalised here), best
  // first, ties broken by the lower gallery index; exact: every row is scored and the result is the true
  // top-k of the float32 scores. The scores depend on the block sizes only through BLAS rounding (last
  // bits), never on the thread count. requires: 1 ≤ k ≤ size(), queries [Q, dim()] of a floating dtype, finite. Memory beyond the
  // result: per thread one query_block × gallery_block f32 tile, plus k running entries per query and
  // gallery part (one part when there are enough query blocks to share, else one per thread).
  // Rows whose similarity is NaN (non-finite input) are never returned; a query with fewer than k rows
  // that score a number is an error rather than a silently wrong ranking.
  // Threads: num_threads() OpenMP threads, each calling a single-threaded GEMM on its own tile and
  // selecting from it at once; OpenBLAS is set to one thread for the duration of the call and restored
  // after (BLAS threads for the GEMM and OpenMP threads for the selection, taking turns on the same cores,
  // made the selection several times slower than its work, measured in bench_search --profile).
  SearchResult search(const Tensor& queries_in, std::int64_t k, const SearchOptions& opt = {}) const {
    ARCLIGHT_CHECK(size() > 0, "FlatIndex::search", "the index is empty");
    ARCLIGHT_CHECK(queries_in.dim() == 2 && queries_in.shape()[1] == dim_, "FlatIndex::search", "expected queries [Q, ",
                   dim_, "], got ", queries_in.str());
    ARCLIGHT_CHECK(k >= 1 && k <= size(), "FlatIndex::search", "k = ", k, " must be in [1, ", size(), "]");
    ARCLIGHT_CHECK(opt.query_block >= 1 && opt.gallery_block >= 1, "FlatIndex::search", "block sizes must be >= 1, got ",
                   opt.query_block, " x ", opt.gallery_block);
    NoGradGuard ng;
    using Clock = std::chrono::steady_clock;
    auto seconds = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
    Tensor q = ops::contiguous(ops::l2_normalize(ops::to(queries_in, DType::f32), 1));
    const std::int64_t Q = q.shape()[0], G = size(), D = dim_;
    Tensor out_s = empty({Q, k}, DType::f32), out_i = empty({Q, k}, DType::i64);
    if (Q == 0) return {out_s, out_i};
    const std::int64_t qb = std::min(opt.query_block, Q), gb = std::min(opt.gallery_block, G);
    const std::int64_t n_qblocks = (Q + qb - 1) / qb;
    const int threads = omp_in_parallel() ? 1 : std::max(1, num_threads());
    // Work items are (query block, gallery part). Few query blocks (small Q): split the gallery into one
    // contiguous part per thread and merge the parts' top-k afterwards.
    const std::int64_t n_gblocks = (G + gb - 1) / gb;
    const std::int64_t parts = n_qblocks >= 4 * threads ? 1 : std::min<std::int64_t>(threads, n_gblocks);
    const std::int64_t n_tasks = n_qblocks * parts;
    std::vector<float> heap_s(static_cast<std::size_t>(parts * Q * k), -std::numeric_limits<float>::infinity());
    std::vector<std::int64_t> heap_i(static_cast<std::size_t>(parts * Q * k), std::int64_t(-1));
    std::vector<std::vector<float>> tiles(static_cast<std::size_t>(threads));
    std::vector<double> gemm_s(static_cast<std::size_t>(threads), 0.0), select_s(static_cast<std::size_t>(threads), 0.0);
    const float* qp = q.data_ptr<float>();
    const float* gp = data_.data_ptr<float>();
    {
      kernels::cpu::SingleThreadedBlas blas_guard(threads > 1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (std::int64_t task = 0; task < n_tasks; ++task) {
        const int t = omp_get_thread_num();
        auto& tile = tiles[static_cast<std::size_t>(t)];
        if (tile.empty()) tile.resize(static_cast<std::size_t>(qb * gb));
        const std::int64_t q0 = (task / parts) * qb, nq = std::min(qb, Q - q0), part = task % parts;
        // part p covers gallery blocks [p·n_gblocks/parts, (p+1)·n_gblocks/parts)
        const std::int64_t gb_begin = part * n_gblocks / parts, gb_end = (part + 1) * n_gblocks / parts;
        float* hs = heap_s.data() + (part * Q + q0) * k;
        std::int64_t* hi = heap_i.data() + (part * Q + q0) * k;
        for (std::int64_t blk = gb_begin; blk < gb_end; ++blk) {
          const std::int64_t g0 = blk * gb, ngal = std::min(gb, G - g0);
          const auto t0 = Clock::now();
          kernels::cpu::GemmShape s{nq, ngal, D, false, true, D, D, ngal};
          kernels::cpu::gemm<float>(s, 1.0f, qp + q0 * D, gp + g0 * D, 0.0f, tile.data());
          const auto t1 = Clock::now();
          for (std::int64_t i = 0; i < nq; ++i)
            detail::topk_offer_row(tile.data() + i * ngal, ngal, g0, hs + i * k, hi + i * k, k);
          if (opt.stats) {
            gemm_s[static_cast<std::size_t>(t)] += seconds(t0, t1);
            select_s[static_cast<std::size_t>(t)] += seconds(t1, Clock::now());
          }
        }
      }
    }
    const auto t2 = Clock::now();
    float* so = out_s.data_ptr<float>();
    std::int64_t* io = out_i.data_ptr<std::int64_t>();
    bool non_finite = false;
    std::vector<std::pair<float, std::int64_t>> row(static_cast<std::size_t>(k));
    for (std::int64_t i = 0; i < Q; ++i) {  // k entries per query and part: negligible next to the scan
      float* hs = heap_s.data() + i * k;
      std::int64_t* hi = heap_i.data() + i * k;
      for (std::int64_t part = 1; part < parts; ++part)  // fold the later parts into part 0
        for (std::int64_t j = 0; j < k; ++j) {
          const float cs = heap_s[static_cast<std::size_t>((part * Q + i) * k + j)];
          const std::int64_t ci = heap_i[static_cast<std::size_t>((part * Q + i) * k + j)];
          if (ci >= 0 && detail::topk_worse(hs[0], hi[0], cs, ci)) detail::topk_replace_root(hs, hi, k, cs, ci);
        }
      for (std::int64_t j = 0; j < k; ++j) {
        row[static_cast<std::size_t>(j)] = {hs[j], hi[j]};
        non_finite |= hi[j] < 0;
      }
      std::sort(row.begin(), row.end(),
                [](const auto& x, const auto& y) { return detail::topk_worse(y.first, y.second, x.first, x.second); });
      for (std::int64_t j = 0; j < k; ++j) {
        so[i * k + j] = row[static_cast<std::size_t>(j)].first;
        io[i * k + j] = row[static_cast<std::size_t>(j)].second;
      }
    }
    if (opt.stats) {  // thread-seconds averaged over the threads, so the parts add up to wall time
      for (int t = 0; t < threads; ++t) {
        opt.stats->gemm_seconds += gemm_s[static_cast<std::size_t>(t)] / threads;
        opt.stats->select_seconds += select_s[static_cast<std::size_t>(t)] / threads;
      }
      opt.stats->select_seconds += seconds(t2, Clock::now());
    }
    // An empty slot survives only if fewer than k gallery rows scored a number: NaN never enters, and unit
    // vectors cannot score ±infinity, so the input held NaN or infinity.
    ARCLIGHT_CHECK(!non_finite, "FlatIndex::search", "non-finite similarities (NaN or infinity in the queries ",
                   "or the gallery): fewer than k = ", k, " finite scores for some query");
    return {out_s, out_i};
  }

  // Saves embeddings and labels as safetensors ("embeddings" f32 [G, D], "labels" i64 [G]).
  void save(const std::filesystem::path& path) const {
    ARCLIGHT_CHECK(size() > 0, "FlatIndex::save", "the index is empty");
    std::vector<io::TensorBytes> ts;
    ts.push_back({"embeddings", DType::f32, {size(), dim_},
                  {static_cast<const std::uint8_t*>(data_.raw_data()), static_cast<std::size_t>(data_.numel() * 4)}});
    if (!labels_.empty())
      ts.push_back({"labels", DType::i64, {size()},
                    {reinterpret_cast<const std::uint8_t*>(labels_.data()), labels_.size() * 8}});
    io::save_safetensors(path, ts, {{"format", "arclight-flat-index"}});
  }

  static FlatIndex load(const std::filesystem::path& path) {
    auto file = io::SafetensorsFile::open(path);
    const auto* emb = file.find("embeddings");
    ARCLIGHT_CHECK(emb != nullptr, "FlatIndex::load", path.string(), ": no tensor 'embeddings'");
    ARCLIGHT_CHECK(emb->dtype == DType::f32 && emb->shape.size() == 2, "FlatIndex::load", path.string(),
                   ": 'embeddings' must be f32 [G, D]");
    Tensor e = empty({emb->shape[0], emb->shape[1]}, DType::f32);
    std::memcpy(e.raw_data(), emb->data.data(), emb->data.size());
    std::vector<std::int64_t> labels;
    if (const auto* lab = file.find("labels")) {
      ARCLIGHT_CHECK(lab->dtype == DType::i64 && lab->shape.size() == 1 && lab->shape[0] == emb->shape[0],
                     "FlatIndex::load", path.string(), ": 'labels' must be i64 [G]");
      labels.resize(static_cast<std::size_t>(lab->shape[0]));
      std::memcpy(labels.data(), lab->data.data(), lab->data.size());
    }
    FlatIndex index;  // stored rows are already normalised: keep them bit for bit
    index.data_ = e;
    index.dim_ = emb->shape[1];
    index.labels_ = std::move(labels);
    return index;
  }

 private:
  Tensor data_;
  std::int64_t dim_ = 0;
  std::vector<std::int64_t> labels_;
};

}  // namespace arclight::retrieval
