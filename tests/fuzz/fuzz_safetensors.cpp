// libFuzzer target for the safetensors reader (io/safetensors.hpp) and, through it, the strict JSON
// parser (io/json.hpp). Any input must either be rejected with arclight::Error or parse into views that
// lie inside the input; an accepted file must survive a write/read round trip unchanged.
// Build and run (see tests/fuzz/README.md):
//   clang++-14 -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -I. \
//       tests/fuzz/fuzz_safetensors.cpp -o build-io/fuzz_safetensors
//   ./build-io/fuzz_safetensors -max_total_time=30 -max_len=4096
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "arclight/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace arclight::io;
  const std::span<const std::uint8_t> input(data, size);
  SafetensorsContents parsed;
  try {
    parsed = parse_safetensors(input, "fuzz");
  } catch (const arclight::Error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }
  std::uint64_t previous_end = parsed.data_offset;
  for (const auto& t : parsed.tensors) {
    // Views lie inside the input, in order, and match shape × dtype size.
    const auto begin = static_cast<std::uint64_t>(t.data.data() - data);
    if (begin < parsed.data_offset || begin != previous_end || begin + t.data.size() > size) std::abort();
    std::uint64_t numel = 1;
    for (auto d : t.shape) numel *= static_cast<std::uint64_t>(d);
    if (numel * arclight::dtype_size(t.dtype) != t.data.size()) std::abort();
    previous_end = begin + t.data.size();
  }
  if (previous_end != size) std::abort();
  // Round trip: what we accept, we can write, and read back identically.
  const auto bytes = serialize_safetensors(parsed.tensors, parsed.metadata);
  const auto again = SafetensorsFile::from_bytes(bytes, "fuzz-roundtrip");
  if (again.size() != parsed.tensors.size() || again.metadata() != parsed.metadata) std::abort();
  for (const auto& t : parsed.tensors) {
    const TensorBytes* u = again.find(t.name);
    if (!u || u->dtype != t.dtype || u->shape != t.shape || u->data.size() != t.data.size() ||
        !std::equal(t.data.begin(), t.data.end(), u->data.begin()))
      std::abort();
  }
  return 0;
}
