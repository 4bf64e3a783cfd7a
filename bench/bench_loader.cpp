// Data-pipeline throughput: Fashion-MNIST IDX load time per split, and the threaded loader on 256x256
// RGB JPEG files (decode + the reference augmentation of METHOD.md §6 + normalise into NCHW float) with
// 1 and 2 worker threads, next to its parts (decode alone, augmentation alone) on one thread.
//   build-*/bench/bench_loader --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <filesystem>
#include <unistd.h>

#include "arclight/data/data.hpp"

namespace ad = arclight::data;

namespace {

// A photo-like 256x256 RGB image: smooth background, a few solid shapes, mild noise (so JPEG sizes are
// realistic, ~20-30 KB at q90).
ad::Image synthetic_photo(int seed) {
  ad::Image img(256, 256, 3);
  arclight::RandomStream rng(static_cast<std::uint64_t>(seed), 99);
  const int cx = static_cast<int>(rng.randint(60, 196)), cy = static_cast<int>(rng.randint(60, 196));
  const int r = static_cast<int>(rng.randint(20, 60));
  for (int y = 0; y < 256; ++y)
    for (int x = 0; x < 256; ++x) {
      const bool in_disc = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r;
      const bool in_box = x > 30 && x < 90 && y > 150 && y < 230;
      for (int k = 0; k < 3; ++k) {
        int v = in_disc ? 40 + 70 * k : in_box ? 220 - 60 * k : (x + y + 40 * k + seed * 13) / 3;
        v += static_cast<int>(rng.randint(-6, 6));
        img.at(y, x, k) = static_cast<std::uint8_t>(std::clamp(v, 0, 255));
      }
    }
  return img;
}

struct JpegFolder {
  std::filesystem::path root;
  std::shared_ptr<ad::ImageFolderDataset> ds;
  std::vector<std::vector<std::uint8_t>> bytes;
  JpegFolder() {
    root = std::filesystem::temp_directory_path() / ("arclight-bench-loader-" + std::to_string(::getpid()));
    for (int i = 0; i < 128; ++i) {
      const auto dir = root / ("class" + std::to_string(i % 4));
      std::filesystem::create_directories(dir);
      bytes.push_back(ad::encode_jpeg(synthetic_photo(i), 90));
      ad::write_file_atomic(dir / ("img" + std::to_string(i) + ".jpg"), bytes.back());
    }
    ds = std::make_shared<ad::ImageFolderDataset>(root);
  }
  ~JpegFolder() {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
};

JpegFolder& jpeg_folder() {
  static JpegFolder f;
  return f;
}

ad::Pipeline reference_pipeline() {
  ad::Pipeline p = ad::preset_pipeline("reference");
  p.normalize(ad::NormalizeSpec::imagenet());
  return p;
}

void BM_FashionMnistLoad(benchmark::State& state) {
  const char* split = state.range(0) == 0 ? "train" : "test";
  const std::filesystem::path dir = ad::fashion_mnist_default_dir();
  if (!std::filesystem::exists(dir / "train-images-idx3-ubyte.gz")) {
    state.SkipWithError("Fashion-MNIST not installed (dataset-fashion-mnist)");
    return;
  }
  std::size_t n = 0;
  for (auto _ : state) {
    auto ds = ad::load_fashion_mnist(dir, split);
    n = ds.size();
    benchmark::DoNotOptimize(ds.raw().data());
  }
  state.SetLabel(split);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(BM_FashionMnistLoad)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_DecodeJpeg256(benchmark::State& state) {
  auto& f = jpeg_folder();
  std::size_t i = 0, bytes = 0;
  for (auto _ : state) {
    const auto& b = f.bytes[i++ % f.bytes.size()];
    bytes += b.size();
    benchmark::DoNotOptimize(ad::decode_image(b).pixels.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
}
BENCHMARK(BM_DecodeJpeg256)->Unit(benchmark::kMicrosecond);

void BM_ReferenceAugment256(benchmark::State& state) {
  auto& f = jpeg_folder();
  const ad::Pipeline p = reference_pipeline();
  const ad::Image img = ad::decode_image(f.bytes[0]);
  std::vector<float> out(3 * 256 * 256);
  std::uint64_t i = 0;
  for (auto _ : state) {
    const ad::Image a = p.apply(img, 1, 0, i++);
    p.to_tensor(a, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_ReferenceAugment256)->Unit(benchmark::kMicrosecond);

// Full loader: read file + decode + reference augmentation + normalise into NCHW batches of 32.
void BM_LoaderReferenceJpeg256(benchmark::State& state) {
  auto& f = jpeg_folder();
  ad::LoaderOptions o;
  o.batch_size = 32;
  o.num_workers = static_cast<int>(state.range(0));
  o.seed = 7;
  ad::DataLoader loader(f.ds, reference_pipeline(), o);
  std::size_t images = 0;
  std::uint64_t epoch = 0;
  for (auto _ : state) {
    loader.start_epoch(epoch++);
    while (auto b = loader.next()) {
      images += b->size();
      benchmark::DoNotOptimize(b->data.data());
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(images));
  state.counters["images_per_s_per_worker"] =
      benchmark::Counter(static_cast<double>(images) / o.num_workers, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LoaderReferenceJpeg256)->Arg(1)->Arg(2)->ArgName("workers")->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
