// arclight-augment-grid: shows what training sees. Writes one PNG where each row is a dataset sample:
// the first cell is the decoded original, the next cells are the same sample through the augmentation
// pipeline in successive epochs (the exact images the loader would produce for that seed).
//
//   arclight-augment-grid --data fashion-mnist --pipeline reference --rows 6 --cols 8 --out grid.png
//   arclight-augment-grid --data path/to/folder_or_train.csv --pipeline "reference | resize(size=224)"
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "arclight/data/data.hpp"

namespace ad = arclight::data;

namespace {

std::shared_ptr<const ad::Dataset> open_dataset(const std::string& spec, const std::string& split) {
  if (spec == "fashion-mnist")
    return std::make_shared<ad::InMemoryDataset>(ad::load_fashion_mnist(ad::fashion_mnist_default_dir(), split));
  const std::filesystem::path p(spec);
  if (std::filesystem::is_directory(p)) return std::make_shared<ad::ImageFolderDataset>(p);
  if (p.extension() == ".csv") return std::make_shared<ad::CsvDataset>(ad::CsvDataset::from_file(p));
  arclight::fail("arclight-augment-grid", "--data '", spec, "' is neither 'fashion-mnist', a folder nor a .csv file");
}

// Scales `img` to a cell x cell RGB tile (nearest for upscaling so pixels stay visible, area to shrink),
// keeping the aspect ratio, centred on a grey background.
ad::Image to_tile(const ad::Image& img, int cell) {
  const ad::Image rgb = ad::grey_to_rgb(img);
  const double s = static_cast<double>(cell) / std::max(rgb.height, rgb.width);
  const int h = std::max(1, static_cast<int>(rgb.height * s)), w = std::max(1, static_cast<int>(rgb.width * s));
  const ad::Image scaled = ad::resize(rgb, h, w, s >= 1 ? ad::Interpolation::nearest : ad::Interpolation::area);
  ad::Image tile(cell, cell, 3, 96);
  const int oy = (cell - h) / 2, ox = (cell - w) / 2;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < 3; ++k) tile.at(oy + y, ox + x, k) = scaled.at(y, x, k);
  return tile;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Write a PNG grid of augmented samples (rows: samples; columns: original, then epochs 0, 1, ...)"};
  std::string data = "fashion-mnist", split = "train", pipeline = "reference", out = "augment_grid.png";
  int rows = 6, cols = 8, cell = 96;
  std::uint64_t seed = 0;
  std::size_t first = 0;
  app.add_option("--data", data, "fashion-mnist, an image folder root/<class>/*, or a CSV (path,label)");
  app.add_option("--split", split, "Fashion-MNIST split: train or test");
  app.add_option("--pipeline", pipeline, "augmentation config string or preset (reference, reference_eval, none)");
  app.add_option("--rows", rows, "samples (one per row)")->check(CLI::Range(1, 64));
  app.add_option("--cols", cols, "cells per row: the original + cols-1 augmented epochs")->check(CLI::Range(2, 64));
  app.add_option("--cell", cell, "cell size in pixels")->check(CLI::Range(16, 1024));
  app.add_option("--seed", seed, "augmentation seed (as the loader's LoaderOptions::seed)");
  app.add_option("--first", first, "first sample; rows are spread evenly from here over the dataset");
  app.add_option("--out", out, "output PNG");
  CLI11_PARSE(app, argc, argv);

  try {
    const auto ds = open_dataset(data, split);
    const ad::Pipeline pipe = ad::parse_pipeline(pipeline);
    ARCLIGHT_CHECK(ds->size() > 0, "arclight-augment-grid", "the dataset is empty");
    std::printf("dataset: %s (%zu samples, %zu classes)\npipeline: %s\n", data.c_str(), ds->size(),
                ds->num_classes(), pipe.describe().c_str());
    const int pad = 2;
    ad::Image grid(rows * (cell + pad) + pad, cols * (cell + pad) + pad, 3, 255);
    const std::size_t stride = std::max<std::size_t>(1, (ds->size() - std::min(first, ds->size() - 1)) / rows);
    for (int r = 0; r < rows; ++r) {
      const std::size_t idx = std::min(ds->size() - 1, first + static_cast<std::size_t>(r) * stride);
      const ad::Image original = ds->load(idx);
      for (int c = 0; c < cols; ++c) {
        const ad::Image shown = c == 0 ? original : pipe.apply(original, seed, static_cast<std::uint64_t>(c - 1), idx);
        const ad::Image tile = to_tile(shown, cell);
        const int oy = pad + r * (cell + pad), ox = pad + c * (cell + pad);
        for (int y = 0; y < cell; ++y)
          std::copy_n(tile.data() + static_cast<std::size_t>(y) * tile.row_stride(), tile.row_stride(),
                      grid.data() + (static_cast<std::size_t>(oy + y) * grid.width + ox) * 3);
      }
      std::printf("row %d: sample %zu '%s' class %lld (%s)\n", r, idx, ds->name(idx).c_str(),
                  static_cast<long long>(ds->label(idx)), ds->class_names()[static_cast<std::size_t>(ds->label(idx))].c_str());
    }
    ad::write_png(out, grid);
    std::printf("wrote %s (%dx%d)\n", out.c_str(), grid.width, grid.height);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
