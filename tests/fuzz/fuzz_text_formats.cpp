// libFuzzer target: the project's small text formats, one per input chosen by the first byte (the rest is
// the text):
//   0  JSON (io/json.hpp): what parses must dump to text that parses back to the same dump;
//   1  a checkpoint MANIFEST (parse_manifest): never throws, and what parses must survive
//      manifest_to_json -> parse_manifest unchanged;
//   2  an augmentation pipeline config (parse_pipeline): what parses must describe() itself as a config that
//      parses back to the same description; it is also run on a small image and converted to a tensor when
//      its numbers are small (sizes of four or more digits would only test the allocator);
//   3  a folds file (parse_folds);
//   4  a class map (parse_class_map).
// Every input must succeed or throw arclight::Error; anything else (another exception, a sanitizer report,
// a broken round trip) is a finding.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "arclight/data/image_folder.hpp"
#include "arclight/data/split.hpp"
#include "arclight/data/transforms.hpp"
#include "arclight/io/checkpoint.hpp"
#include "arclight/io/json.hpp"

namespace {

bool numbers_are_small(std::string_view s) {
  int run = 0;
  for (char c : s) {
    run = std::isdigit(static_cast<unsigned char>(c)) ? run + 1 : 0;
    if (run >= 4) return false;
  }
  return true;
}

void same_manifest(const arclight::io::detail::Manifest& a, const arclight::io::detail::Manifest& b) {
  if (a.name != b.name || a.sequence != b.sequence || a.format_version != b.format_version ||
      a.files.size() != b.files.size())
    std::abort();
  for (const auto& [k, f] : a.files) {
    const auto it = b.files.find(k);
    if (it == b.files.end() || it->second.size != f.size || it->second.sha256 != f.sha256) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace ad = arclight::data;
  namespace io = arclight::io;
  namespace json = arclight::io::json;
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 5) {
    case 0:
      try {
        const std::string once = json::dump(json::parse(text));
        if (json::dump(json::parse(once)) != once) std::abort();
      } catch (const arclight::Error&) {
      }
      break;
    case 1: {
      io::detail::Manifest m;
      if (!io::detail::parse_manifest(text, m)) {
        io::detail::Manifest back;
        if (io::detail::parse_manifest(io::detail::manifest_to_json(m), back)) std::abort();
        same_manifest(m, back);
      }
      break;
    }
    case 2:
      try {
        const ad::Pipeline p = ad::parse_pipeline(text);
        const std::string described = p.describe();
        if (ad::parse_pipeline(described).describe() != described) std::abort();
        if (numbers_are_small(text)) {
          ad::Image img(12, 10, 3);
          for (std::size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<std::uint8_t>(i * 29);
          const ad::Image out = p.apply(img, 7, 1, 3);
          if (out.pixels.size() != out.row_stride() * static_cast<std::size_t>(out.height)) std::abort();
          std::vector<float> chw(out.pixels.size());
          p.to_tensor(out, chw.data());
        }
      } catch (const arclight::Error&) {
      }
      break;
    case 3:
      try {
        const ad::FoldAssignment fa = ad::parse_folds(text, "fuzz-folds");
        for (int f : fa.fold)
          if (f < 0 || f >= fa.n_splits) std::abort();
      } catch (const arclight::Error&) {
      }
      break;
    default:
      try {
        (void)ad::parse_class_map(text, "fuzz-classes");
      } catch (const arclight::Error&) {
      }
      break;
  }
  return 0;
}
