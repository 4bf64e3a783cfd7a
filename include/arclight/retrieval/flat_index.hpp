// Exact cosine search. A FlatIndex holds L2-normalised gallery embeddings [G, D] with their labels; a
// search scores query blocks against gallery blocks with one BLAS GEMM per block pair (so memory stays
// bounded by block sizes: the Q × G score matrix is never materialised) and keeps a per-query partial
// top-k, merged across gallery blocks. Ties are broken by the lower gallery index, so results are
// deterministic. Threads: BLAS threads inside each GEMM, OpenMP across queries for the selection.
#pragma once

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "arclight/arclight.hpp"
#include "arclight/io/safetensors.hpp"
#include "kernels/cpu/gemm.hpp"

namespace arclight::retrieval {

struct SearchResult {
  Tensor scores;   // [Q, k] f32, best first
  Tensor indices;  // [Q, k] i64 gallery rows
};

struct SearchOptions {
  std::int64_t query_block = 256;
  std::int64_t gallery_block = 8192;
};

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

  // The k most similar gallery rows of each query (cosine similarity). requires: 1 ≤ k ≤ size().
  SearchResult search(const Tensor& queries_in, std::int64_t k, const SearchOptions& opt = {}) const {
    ARCLIGHT_CHECK(size() > 0, "FlatIndex::search", "the index is empty");
    ARCLIGHT_CHECK(queries_in.dim() == 2 && queries_in.shape()[1] == dim_, "FlatIndex::search", "expected queries [Q, ",
                   dim_, "], got ", queries_in.str());
    ARCLIGHT_CHECK(k >= 1 && k <= size(), "FlatIndex::search", "k = ", k, " must be in [1, ", size(), "]");
    NoGradGuard ng;
    Tensor q = ops::contiguous(ops::l2_normalize(ops::to(queries_in, DType::f32), 1));
    const std::int64_t Q = q.shape()[0], G = size(), D = dim_;
    Tensor out_s = empty({Q, k}, DType::f32), out_i = empty({Q, k}, DType::i64);
    const std::int64_t qb = std::max<std::int64_t>(1, opt.query_block), gb = std::max<std::int64_t>(1, opt.gallery_block);
    std::vector<float> scores(static_cast<std::size_t>(qb * std::min(gb, G)));
    std::vector<std::vector<std::pair<float, std::int64_t>>> best(static_cast<std::size_t>(qb));
    const float* qp = q.data_ptr<float>();
    const float* gp = data_.data_ptr<float>();
    // better-than: higher score, then lower index
    auto better = [](const std::pair<float, std::int64_t>& a, const std::pair<float, std::int64_t>& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    for (std::int64_t q0 = 0; q0 < Q; q0 += qb) {
      const std::int64_t nq = std::min(qb, Q - q0);
      for (std::int64_t i = 0; i < nq; ++i) best[static_cast<std::size_t>(i)].clear();
      for (std::int64_t g0 = 0; g0 < G; g0 += gb) {
        const std::int64_t ng = std::min(gb, G - g0);
        kernels::cpu::GemmShape s{nq, ng, D, false, true, D, D, ng};
        kernels::cpu::gemm<float>(s, 1.0f, qp + q0 * D, gp + g0 * D, 0.0f, scores.data());
#pragma omp parallel for schedule(static)
        for (std::int64_t i = 0; i < nq; ++i) {
          auto& cand = best[static_cast<std::size_t>(i)];
          const float* row = scores.data() + i * ng;
          for (std::int64_t j = 0; j < ng; ++j) cand.emplace_back(row[j], g0 + j);
          if (static_cast<std::int64_t>(cand.size()) > k) {
            std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(), better);
            cand.resize(static_cast<std::size_t>(k));
          }
        }
      }
      float* so = out_s.data_ptr<float>();
      std::int64_t* io = out_i.data_ptr<std::int64_t>();
#pragma omp parallel for schedule(static)
      for (std::int64_t i = 0; i < nq; ++i) {
        auto& cand = best[static_cast<std::size_t>(i)];
        std::sort(cand.begin(), cand.end(), better);
        for (std::int64_t j = 0; j < k; ++j) {
          so[(q0 + i) * k + j] = cand[static_cast<std::size_t>(j)].first;
          io[(q0 + i) * k + j] = cand[static_cast<std::size_t>(j)].second;
        }
      }
    }
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
