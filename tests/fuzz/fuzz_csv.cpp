// libFuzzer target: the CSV parser and the CSV dataset builder (without touching the file system) on
// arbitrary text. Any input must give rows of exactly header.size() fields, or throw arclight::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "arclight/data/csv_dataset.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace ad = arclight::data;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const ad::CsvTable t = ad::parse_csv(text, "fuzz.csv");
    if (t.rows.size() != t.row_lines.size()) std::abort();
    for (const auto& r : t.rows)
      if (r.size() != t.header.size()) std::abort();
    ad::CsvDatasetOptions opts;
    opts.check_files = false;
    opts.image_root = "/nonexistent";
    const ad::CsvDataset ds(t, opts, "fuzz.csv");
    for (std::size_t i = 0; i < ds.size(); ++i)
      if (ds.label(i) < 0 || static_cast<std::size_t>(ds.label(i)) >= ds.num_classes()) std::abort();
  } catch (const arclight::Error&) {
  }
  return 0;
}
