// Shared helpers of the data-pipeline tests: deterministic non-trivial test images and a scratch folder
// that removes itself.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <unistd.h>

#include "arclight/data/image.hpp"

namespace arclight::data::testing {

// A smooth gradient plus a hashed texture: no two neighbouring pixels equal, nothing constant.
inline Image pattern_image(int h, int w, int c, std::uint32_t seed = 1, bool smooth = false) {
  Image img(h, w, c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) {
        std::uint32_t v = static_cast<std::uint32_t>(x * 131 + y * 71 + k * 29) * 2654435761u ^ seed * 40503u;
        v ^= v >> 13;
        const int base = (x * 200) / std::max(1, w - 1) / 2 + (y * 200) / std::max(1, h - 1) / 2 + k * 10;
        img.at(y, x, k) = static_cast<std::uint8_t>(smooth ? std::min(255, base + static_cast<int>(v % 8) + 20)
                                                           : (base + v % 64) % 256);
      }
  return img;
}

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("arclight-data-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// EXPECT that `stmt` throws arclight::Error whose message contains every given fragment.
#define EXPECT_ERROR_WITH(stmt, ...)                                                      \
  do {                                                                                    \
    bool thrown_ = false;                                                                 \
    try {                                                                                 \
      stmt;                                                                               \
    } catch (const ::arclight::Error& e_) {                                               \
      thrown_ = true;                                                                     \
      const std::string msg_ = e_.what();                                                 \
      for (const char* frag_ : {__VA_ARGS__})                                             \
        EXPECT_NE(msg_.find(frag_), std::string::npos) << "message: " << msg_ << "\nmissing: " << frag_; \
    }                                                                                     \
    EXPECT_TRUE(thrown_) << "expected arclight::Error from " #stmt;                       \
  } while (0)

}  // namespace arclight::data::testing
