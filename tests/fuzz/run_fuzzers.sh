#!/usr/bin/env bash
# Builds the data-pipeline libFuzzer targets with clang-14 (-fsanitize=fuzzer,address,undefined) and runs
# each for a short time (default 20 s) from a small seed corpus it generates.
#   tests/fuzz/run_fuzzers.sh [seconds] [build-dir]
# Exit status is non-zero if a target fails to build or the fuzzer finds a crash, leak, or UB; crash
# inputs are left in <build-dir>/<target>.work/ as crash-* files.
# FUZZ_SEED=<n> fixes libFuzzer's random seed, so a run explores the same inputs in the same order (CI
# does this, so its verdict does not change from run to run); unset, every run draws a new seed and
# explores new ground.
set -euo pipefail
secs="${1:-20}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${2:-$root/build-fuzz}"
cxx="${CXX_FUZZ:-clang++-14}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"  # absolute: the fuzzers run from their own work folders
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -fsanitize-ignorelist="$root/tests/fuzz/stb_ubsan.ignore" -I"$root/include" -I"$root")

for t in fuzz_image_decode fuzz_idx fuzz_csv fuzz_safetensors fuzz_text_formats; do
  echo "== building $t"
  "$cxx" "${flags[@]}" "$root/tests/fuzz/$t.cpp" -o "$out/$t" -lz
done

# Seed corpora: valid small inputs of each kind, made by the library itself (no binary files in git).
seed_src="$out/make_seeds.cpp"
cat > "$seed_src" <<'CPP'
#include "arclight/data/image_io.hpp"
#include <fstream>
#include <string>
int main(int, char** argv) {
  namespace ad = arclight::data;
  const std::string dir = argv[1];
  auto put = [&](const std::string& name, const std::vector<std::uint8_t>& b) {
    std::ofstream(dir + "/" + name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
  };
  for (int c : {1, 3, 4}) {
    ad::Image img(9, 13, c);
    for (std::size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<std::uint8_t>(i * 37);
    put("img/p" + std::to_string(c) + ".png", ad::encode_png(img));
    put("img/j" + std::to_string(c) + ".jpg", ad::encode_jpeg(img, c == 1 ? 50 : 95));
  }
  put("idx/a.idx", {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8});
  put("idx/l.idx", {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 9});
  const std::string csv = "path,label\na.jpg,1\n\"b,c.png\",2\r\nd.jpg,\"x\"\"y\"\n";
  put("csv/a.csv", std::vector<std::uint8_t>(csv.begin(), csv.end()));
  const std::string st = std::string("\x40\0\0\0\0\0\0\0", 8) +
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}          " + std::string(4, '\0');
  put("st/a.safetensors", std::vector<std::uint8_t>(st.begin(), st.end()));
  // Text formats: the first byte picks the parser (see fuzz_text_formats.cpp).
  auto text = [&](const std::string& name, char kind, const std::string& body) {
    const std::string b = std::string(1, kind) + body;
    put("txt/" + name, std::vector<std::uint8_t>(b.begin(), b.end()));
  };
  text("json", 0, "{\"a\":[1,-2.5e3,true,null,\"x\\u00e9\\n\"],\"b\":{\"c\":18446744073709551615}}");
  text("manifest", 1, "{\"format\":\"arclight-checkpoint\",\"format_version\":1,\"name\":\"step-1\",\"sequence\":3,"
       "\"files\":{\"model.safetensors\":{\"size\":12,\"sha256\":\"" + std::string(64, 'a') + "\"}}}");
  text("pipeline", 2, "hflip(p=0.5) | ssr(shift=0.1, scale=0.2, rotate=30, p=1) | cutout(holes=2, size=3, p=1) | "
       "jpeg(lo=50, hi=90, p=1) | rrc(size=8, p=1) | normalize(preset=imagenet)");
  text("folds", 3, "arclight-folds 1\nn_splits 2\nseed 5\nshuffle 1\nlabels_hash 9\nn_samples 3\nfolds\n0 1 0\n");
  text("classes", 4, "# classes\n0\tshirt\n1\tbag\n");
}
CPP
clang++-14 -std=c++20 -O1 -I"$root/include" -I"$root" "$seed_src" -o "$out/make_seeds" -lz
mkdir -p "$out/corpus/img" "$out/corpus/idx" "$out/corpus/csv" "$out/corpus/st" "$out/corpus/txt"
"$out/make_seeds" "$out/corpus"
gzip -kf "$out/corpus/idx/a.idx"

run() {
  local t="$1" corpus="$2"
  echo "== running $t for ${secs}s"
  mkdir -p "$out/$t.work"
  local seed=()
  [ -n "${FUZZ_SEED:-}" ] && seed=(-seed="$FUZZ_SEED")
  (cd "$out/$t.work" && "$out/$t" "${seed[@]}" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 "$corpus" 2>&1 \
      | grep -v -E '^"|# Uses:|NEW_FUNC|^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|INITED|RELOAD|DONE)|^INFO: -max_len' | tail -n 60)
  return "${PIPESTATUS[0]}"
}
status=0
run fuzz_image_decode "$out/corpus/img" || status=1
run fuzz_idx "$out/corpus/idx" || status=1
run fuzz_safetensors "$out/corpus/st" || status=1
run fuzz_csv "$out/corpus/csv" || status=1
run fuzz_text_formats "$out/corpus/txt" || status=1
exit $status
