// libFuzzer target: the IDX parser on raw bytes and behind gunzip (the path read_idx takes for .gz
// files), then the dataset builder on pairs of parsed arrays. Any input must parse consistently
// (data.size() == product of dims) or throw arclight::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "arclight/data/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace ad = arclight::data;
  ad::IdxLimits limits;
  limits.max_elements = 1 << 22;
  auto check = [](const ad::IdxArray& a) {
    std::size_t n = 1;
    for (auto d : a.dims) n *= d;
    if (n != a.data.size()) std::abort();
  };
  try {
    const ad::IdxArray a = ad::parse_idx(data, size, "fuzz", limits);
    check(a);
    // Split the array in two as images + labels: exercises the count/rank/label checks.
    try {
      (void)ad::idx_dataset(a, a, ad::fashion_mnist_class_names(), "fuzz");
    } catch (const arclight::Error&) {
    }
  } catch (const arclight::Error&) {
  }
  try {
    const auto plain = ad::gunzip(data, size, 1 << 22, "fuzz.gz");
    check(ad::parse_idx(plain.data(), plain.size(), "fuzz.gz", limits));
  } catch (const arclight::Error&) {
  }
  return 0;
}
