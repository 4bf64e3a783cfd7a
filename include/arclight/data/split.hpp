// Train/validation splits: stratified k-fold (the algorithm of scikit-learn's StratifiedKFold, >= 0.22,
// with our Philox stream in place of NumPy's for the shuffle) and a stratified hold-out split. A fold
// assignment is saved next to a run as a small text file, with a hash of the labels it was made for, so
// evaluation reuses exactly the same split and refuses a different dataset.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/core/rng.hpp"
#include "arclight/data/image_io.hpp"

namespace arclight::data {

// FNV-1a over the labels: identifies the label vector a split was made for.
inline std::uint64_t labels_hash(const std::vector<std::int64_t>& labels) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (std::int64_t l : labels) {
    auto u = static_cast<std::uint64_t>(l);
    for (int b = 0; b < 8; ++b) {
      h ^= (u >> (8 * b)) & 0xFF;
      h *= 0x100000001B3ull;
    }
  }
  return h;
}

struct FoldAssignment {
  int n_splits = 0;
  std::uint64_t seed = 0;
  bool shuffle = true;
  std::uint64_t labels_hash = 0;
  std::vector<int> fold;  // fold[i]: the fold in which sample i is in the validation set

  // Indices (ascending) validated in fold k / trained on in fold k. requires: 0 <= k < n_splits.
  std::vector<std::size_t> val_indices(int k) const { return select(k, true); }
  std::vector<std::size_t> train_indices(int k) const { return select(k, false); }

 private:
  std::vector<std::size_t> select(int k, bool val) const {
    ARCLIGHT_CHECK(k >= 0 && k < n_splits, "FoldAssignment", "fold ", k, ", expected 0..", n_splits - 1);
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < fold.size(); ++i)
      if ((fold[i] == k) == val) out.push_back(i);
    return out;
  }
};

// Stratified k-fold. Classes are numbered by first appearance; the labels sorted by that number are
// dealt round-robin to the folds, which fixes how many samples of each class every fold gets (sizes
// differ by at most one per class); within a class the fold tags [0,..,0,1,..,1,..] are shuffled
// (when `shuffle`) and given to the class's samples in index order.
// requires: 2 <= n_splits <= labels.size(). ensures: fold.size() == labels.size(), values in [0, n_splits).
inline FoldAssignment stratified_kfold(const std::vector<std::int64_t>& labels, int n_splits, std::uint64_t seed,
                                       bool shuffle = true) {
  ARCLIGHT_CHECK(n_splits >= 2, "stratified_kfold", "n_splits = ", n_splits, ", expected >= 2");
  ARCLIGHT_CHECK(static_cast<std::size_t>(n_splits) <= labels.size(), "stratified_kfold", "n_splits = ", n_splits,
                 " is greater than the number of samples (", labels.size(), ")");
  std::map<std::int64_t, std::size_t> code;  // label -> class number by first appearance
  std::vector<std::size_t> enc(labels.size());
  for (std::size_t i = 0; i < labels.size(); ++i) {
    auto it = code.find(labels[i]);
    if (it == code.end()) it = code.emplace(labels[i], code.size()).first;
    enc[i] = it->second;
  }
  const std::size_t K = code.size();
  std::vector<std::size_t> sorted = enc;
  std::sort(sorted.begin(), sorted.end());
  // allocation[f][k]: samples of class k in fold f = count of k among sorted[f], sorted[f + n], ...
  std::vector<std::vector<std::size_t>> alloc(static_cast<std::size_t>(n_splits), std::vector<std::size_t>(K, 0));
  for (std::size_t j = 0; j < sorted.size(); ++j) ++alloc[j % n_splits][sorted[j]];
  FoldAssignment fa;
  fa.n_splits = n_splits;
  fa.seed = seed;
  fa.shuffle = shuffle;
  fa.labels_hash = labels_hash(labels);
  fa.fold.assign(labels.size(), -1);
  std::vector<std::vector<std::size_t>> members(K);
  for (std::size_t i = 0; i < enc.size(); ++i) members[enc[i]].push_back(i);
  for (std::size_t k = 0; k < K; ++k) {
    std::vector<int> tags;
    for (int f = 0; f < n_splits; ++f) tags.insert(tags.end(), alloc[f][k], f);
    if (shuffle && tags.size() > 1) {
      RandomStream rng(seed, 0xF01D000000000000ull + k);
      for (std::size_t i = tags.size() - 1; i > 0; --i)
        std::swap(tags[i], tags[static_cast<std::size_t>(rng.randint(0, static_cast<std::int64_t>(i)))]);
    }
    for (std::size_t j = 0; j < members[k].size(); ++j) fa.fold[members[k][j]] = tags[j];
  }
  return fa;
}

struct HoldoutSplit {
  std::vector<std::size_t> train, val;  // ascending
};

// Hold-out split: per class (when `stratified`, else over all samples) round(val_fraction * count)
// samples chosen by a seeded shuffle go to validation. requires: 0 <= val_fraction <= 1.
inline HoldoutSplit holdout_split(const std::vector<std::int64_t>& labels, double val_fraction, std::uint64_t seed,
                                  bool stratified = true) {
  ARCLIGHT_CHECK(val_fraction >= 0 && val_fraction <= 1, "holdout_split", "val_fraction = ", val_fraction,
                 ", expected [0, 1]");
  std::map<std::int64_t, std::vector<std::size_t>> groups;
  for (std::size_t i = 0; i < labels.size(); ++i) groups[stratified ? labels[i] : 0].push_back(i);
  std::vector<bool> is_val(labels.size(), false);
  std::uint64_t g = 0;
  for (auto& [cls, idx] : groups) {
    RandomStream rng(seed, 0x401D000000000000ull + g++);
    for (std::size_t i = idx.size(); i > 1; --i)
      std::swap(idx[i - 1], idx[static_cast<std::size_t>(rng.randint(0, static_cast<std::int64_t>(i - 1)))]);
    const auto n_val = static_cast<std::size_t>(std::nearbyint(val_fraction * static_cast<double>(idx.size())));
    for (std::size_t j = 0; j < n_val && j < idx.size(); ++j) is_val[idx[j]] = true;
  }
  HoldoutSplit s;
  for (std::size_t i = 0; i < labels.size(); ++i) (is_val[i] ? s.val : s.train).push_back(i);
  return s;
}

// Saves a fold assignment as text (atomically):
//   arclight-folds 1 / n_splits K / seed S / shuffle 0|1 / labels_hash H / n_samples N / folds / N ints.
inline void save_folds(const std::filesystem::path& path, const FoldAssignment& fa) {
  std::ostringstream os;
  os << "arclight-folds 1\nn_splits " << fa.n_splits << "\nseed " << fa.seed << "\nshuffle " << (fa.shuffle ? 1 : 0)
     << "\nlabels_hash " << fa.labels_hash << "\nn_samples " << fa.fold.size() << "\nfolds\n";
  for (std::size_t i = 0; i < fa.fold.size(); ++i) os << fa.fold[i] << ((i % 64 == 63 || i + 1 == fa.fold.size()) ? '\n' : ' ');
  const std::string text = os.str();
  write_file_atomic(path, std::vector<std::uint8_t>(text.begin(), text.end()));
}

// Parses the text of a file written by save_folds; `name` (the file) is named in every error. When `labels` is
// given, its hash and size must match the file's.
// throws: arclight::Error naming `name` for a bad header, a fold outside [0, n_splits), a wrong count (including
// an n_samples the text is too short to hold, refused before anything is allocated), trailing data, or a
// label mismatch.
inline FoldAssignment parse_folds(std::string_view text, std::string_view name,
                                  const std::vector<std::int64_t>* labels = nullptr) {
  const std::string where = str_cat("load_folds: ", name);
  std::istringstream in{std::string(text)};
  auto expect_key = [&](const char* key) {
    std::string k;
    ARCLIGHT_CHECK(static_cast<bool>(in >> k) && k == key, where, "expected '", key, "', found '", k, "'");
  };
  FoldAssignment fa;
  int version = 0, shuffle = 0;
  std::size_t n = 0;
  expect_key("arclight-folds");
  ARCLIGHT_CHECK(static_cast<bool>(in >> version) && version == 1, where, "unsupported version ", version);
  expect_key("n_splits");
  ARCLIGHT_CHECK(static_cast<bool>(in >> fa.n_splits) && fa.n_splits >= 2, where, "bad n_splits");
  expect_key("seed");
  ARCLIGHT_CHECK(static_cast<bool>(in >> fa.seed), where, "bad seed");
  expect_key("shuffle");
  ARCLIGHT_CHECK(static_cast<bool>(in >> shuffle) && (shuffle == 0 || shuffle == 1), where, "bad shuffle flag");
  fa.shuffle = shuffle == 1;
  expect_key("labels_hash");
  ARCLIGHT_CHECK(static_cast<bool>(in >> fa.labels_hash), where, "bad labels_hash");
  expect_key("n_samples");
  ARCLIGHT_CHECK(static_cast<bool>(in >> n), where, "bad n_samples");
  // Every entry takes at least two characters (a digit and a separator; the last may end the text).
  ARCLIGHT_CHECK(n <= text.size() / 2 + 1, where, "n_samples ", n, " but the file holds only ", text.size(),
                 " bytes, too few for that many fold entries");
  expect_key("folds");
  fa.fold.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    int f = -1;
    ARCLIGHT_CHECK(static_cast<bool>(in >> f), where, "only ", i, " of ", n, " fold entries");
    ARCLIGHT_CHECK(f >= 0 && f < fa.n_splits, where, "entry ", i, " is fold ", f, ", expected 0..", fa.n_splits - 1);
    fa.fold[i] = f;
  }
  std::string extra;
  ARCLIGHT_CHECK(!(in >> extra), where, "trailing data after ", n, " fold entries: '", extra, "'");
  if (labels) {
    ARCLIGHT_CHECK(labels->size() == n && labels_hash(*labels) == fa.labels_hash, where, "the folds were made for ",
                   n, " samples with labels hash ", fa.labels_hash, ", but the dataset has ", labels->size(),
                   " samples with hash ", labels_hash(*labels));
  }
  return fa;
}

// Loads a file written by save_folds (see parse_folds; errors name the path).
inline FoldAssignment load_folds(const std::filesystem::path& path, const std::vector<std::int64_t>* labels = nullptr) {
  const std::vector<std::uint8_t> bytes = read_file_bytes(path);
  return parse_folds(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path.string(),
                     labels);
}

}  // namespace arclight::data
