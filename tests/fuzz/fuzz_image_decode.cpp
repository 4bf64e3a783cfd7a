// libFuzzer target: arclight::data::decode_image on arbitrary bytes, as 1, 3 and "as stored" channels,
// with tight caps so the fuzzer explores the parsers rather than large allocations. Any input must
// either decode to an image of the size its header announced or throw arclight::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "arclight/data/image_io.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace ad = arclight::data;
  ad::DecodeOptions opts;
  opts.max_pixels = 1 << 20;
  opts.max_side = 4096;
  opts.channels = size > 0 ? (data[size - 1] % 3 == 0 ? 0 : (data[size - 1] % 3 == 1 ? 1 : 3)) : 3;
  try {
    const ad::Image img = ad::decode_image(data, size, opts, "fuzz");
    if (img.width <= 0 || img.height <= 0 || img.pixels.size() != img.row_stride() * img.height) std::abort();
    // Re-encode what decoded: the writer must accept any decoded image.
    if (img.pixels.size() < (1u << 16)) (void)ad::encode_png(img);
  } catch (const arclight::Error&) {
  }
  return 0;
}
