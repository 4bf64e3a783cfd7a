// The common dataset interface of the data pipeline and its generic implementations: an in-memory image
// set (IDX / Fashion-MNIST), a view over a subset of indices (folds, per-class subsampling), and the
// helpers that read labels out of any dataset. File-backed datasets live in image_folder.hpp and
// csv_dataset.hpp. A dataset is immutable after construction and load() is safe to call from many
// loader threads at once.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/core/rng.hpp"
#include "arclight/data/image.hpp"

namespace arclight::data {

class Dataset {
 public:
  virtual ~Dataset() = default;
  // Number of samples.
  virtual std::size_t size() const = 0;
  // Class index of sample i, in [0, num_classes()). requires: i < size().
  virtual std::int64_t label(std::size_t i) const = 0;
  // Decodes sample i. Thread-safe. throws: arclight::Error naming the sample when it cannot be read.
  virtual Image load(std::size_t i) const = 0;
  // A human-readable identity of sample i (its file path, or "<set>[i]"), used in error messages.
  virtual std::string name(std::size_t i) const = 0;
  virtual std::size_t num_classes() const = 0;
  // Class index -> name; size() == num_classes().
  virtual const std::vector<std::string>& class_names() const = 0;

 protected:
  void check_index(std::size_t i, const char* where) const {
    ARCLIGHT_CHECK(i < size(), where, "index ", i, " out of range for a dataset of ", size(), " samples");
  }
};

// All labels of a dataset, in index order.
inline std::vector<std::int64_t> dataset_labels(const Dataset& ds) {
  std::vector<std::int64_t> out(ds.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = ds.label(i);
  return out;
}

// Images held in one contiguous uint8 buffer (N x H x W x C), e.g. an IDX file.
class InMemoryDataset final : public Dataset {
 public:
  // requires: images.size() == n * height * width * channels with n == labels.size(); every label in
  // [0, class_names.size()). `set_name` prefixes sample names ("fashion-mnist/train" -> "...[i]").
  InMemoryDataset(std::vector<std::uint8_t> images, int height, int width, int channels,
                  std::vector<std::int64_t> labels, std::vector<std::string> class_names, std::string set_name)
      : images_(std::move(images)), height_(height), width_(width), channels_(channels),
        labels_(std::move(labels)), class_names_(std::move(class_names)), set_name_(std::move(set_name)) {
    const char* where = "InMemoryDataset";
    ARCLIGHT_CHECK(height > 0 && width > 0 && (channels == 1 || channels == 3), where, "image shape ", height, "x",
                   width, "x", channels, ", expected positive sides and 1 or 3 channels");
    ARCLIGHT_CHECK(!class_names_.empty(), where, "no classes");
    const std::size_t per = checked_mul(checked_mul(height, width, where), channels, where);
    ARCLIGHT_CHECK(images_.size() == checked_mul(per, labels_.size(), where), where, "image buffer holds ",
                   images_.size(), " bytes, expected ", labels_.size(), " x ", per);
    for (std::size_t i = 0; i < labels_.size(); ++i)
      ARCLIGHT_CHECK(labels_[i] >= 0 && labels_[i] < static_cast<std::int64_t>(class_names_.size()), where,
                     "label ", labels_[i], " of sample ", i, " is outside [0, ", class_names_.size(), ")");
  }

  std::size_t size() const override { return labels_.size(); }
  std::int64_t label(std::size_t i) const override {
    check_index(i, "InMemoryDataset::label");
    return labels_[i];
  }
  Image load(std::size_t i) const override {
    check_index(i, "InMemoryDataset::load");
    Image img(height_, width_, channels_);
    const std::size_t per = img.pixels.size();
    std::copy(images_.begin() + static_cast<std::ptrdiff_t>(i * per),
              images_.begin() + static_cast<std::ptrdiff_t>((i + 1) * per), img.pixels.begin());
    return img;
  }
  std::string name(std::size_t i) const override { return str_cat(set_name_, "[", i, "]"); }
  std::size_t num_classes() const override { return class_names_.size(); }
  const std::vector<std::string>& class_names() const override { return class_names_; }

  int height() const { return height_; }
  int width() const { return width_; }
  int channels() const { return channels_; }
  const std::vector<std::uint8_t>& raw() const { return images_; }
  const std::vector<std::int64_t>& labels() const { return labels_; }

 private:
  std::vector<std::uint8_t> images_;
  int height_, width_, channels_;
  std::vector<std::int64_t> labels_;
  std::vector<std::string> class_names_;
  std::string set_name_;
};

// A view of `base` restricted to `indices` (in the given order); shares the base dataset.
class SubsetDataset final : public Dataset {
 public:
  SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<std::size_t> indices)
      : base_(std::move(base)), indices_(std::move(indices)) {
    ARCLIGHT_CHECK(base_ != nullptr, "SubsetDataset", "null base dataset");
    for (std::size_t k = 0; k < indices_.size(); ++k)
      ARCLIGHT_CHECK(indices_[k] < base_->size(), "SubsetDataset", "index ", indices_[k], " at position ", k,
                     " is out of range for a base of ", base_->size(), " samples");
  }
  std::size_t size() const override { return indices_.size(); }
  std::int64_t label(std::size_t i) const override {
    check_index(i, "SubsetDataset::label");
    return base_->label(indices_[i]);
  }
  Image load(std::size_t i) const override {
    check_index(i, "SubsetDataset::load");
    return base_->load(indices_[i]);
  }
  std::string name(std::size_t i) const override {
    check_index(i, "SubsetDataset::name");
    return base_->name(indices_[i]);
  }
  std::size_t num_classes() const override { return base_->num_classes(); }
  const std::vector<std::string>& class_names() const override { return base_->class_names(); }
  const std::vector<std::size_t>& indices() const { return indices_; }
  std::size_t base_index(std::size_t i) const { return indices_.at(i); }

 private:
  std::shared_ptr<const Dataset> base_;
  std::vector<std::size_t> indices_;
};

// Per-class subsampling ("k images per class") to reproduce a few-shot regime.
// ensures: for every class, min(k, count) indices chosen uniformly without replacement by a Fisher-Yates
// shuffle seeded by `seed`; the result is sorted ascending. Deterministic in (labels, k, seed).
inline std::vector<std::size_t> sample_per_class(const std::vector<std::int64_t>& labels, std::size_t k,
                                                 std::uint64_t seed) {
  std::map<std::int64_t, std::vector<std::size_t>> by_class;
  for (std::size_t i = 0; i < labels.size(); ++i) by_class[labels[i]].push_back(i);
  std::vector<std::size_t> out;
  for (auto& [cls, members] : by_class) {
    RandomStream rng(seed, 0x5AB5A3B1E000000ull ^ static_cast<std::uint64_t>(cls));
    const std::size_t take = std::min(k, members.size());
    for (std::size_t j = 0; j < take; ++j) {  // partial Fisher-Yates: the first `take` slots
      const auto r = static_cast<std::size_t>(rng.randint(static_cast<std::int64_t>(j),
                                                          static_cast<std::int64_t>(members.size() - 1)));
      std::swap(members[j], members[r]);
    }
    out.insert(out.end(), members.begin(), members.begin() + static_cast<std::ptrdiff_t>(take));
  }
  std::sort(out.begin(), out.end());
  return out;
}

inline std::shared_ptr<SubsetDataset> subsample_per_class(std::shared_ptr<const Dataset> base, std::size_t k,
                                                          std::uint64_t seed) {
  ARCLIGHT_CHECK(base != nullptr, "subsample_per_class", "null dataset");
  auto idx = sample_per_class(dataset_labels(*base), k, seed);
  return std::make_shared<SubsetDataset>(std::move(base), std::move(idx));
}

}  // namespace arclight::data
