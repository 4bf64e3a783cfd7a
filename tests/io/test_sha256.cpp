// SHA-256 against the NIST FIPS 180-4 example vectors and against digests printed by coreutils'
// sha256sum for messages whose lengths straddle the padding boundaries (55/56/64 bytes mod 64).
#include <gtest/gtest.h>

#include <string>

#include "arclight/io/sha256.hpp"

namespace {

using arclight::io::Sha256;
using arclight::io::sha256;
using arclight::io::to_hex;

TEST(Sha256, NistOneBlockMessageAbc) {
  EXPECT_EQ(to_hex(sha256(std::string_view("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, NistEmptyMessage) {
  EXPECT_EQ(to_hex(sha256(std::string_view(""))), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, NistTwoBlockMessage448Bits) {
  EXPECT_EQ(to_hex(sha256(std::string_view("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, Nist896BitMessage) {
  EXPECT_EQ(to_hex(sha256(std::string_view("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                                           "klmnopqrlmnopqrsmnopqrstnopqrstu"))),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST(Sha256, NistMillionA) {
  const std::string m(1000000, 'a');
  EXPECT_EQ(to_hex(sha256(std::string_view(m))), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PaddingBoundaryLengthsMatchSha256sum) {
  const std::pair<std::size_t, const char*> cases[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
      {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
  };
  for (const auto& [n, hex] : cases) EXPECT_EQ(to_hex(sha256(std::string_view(std::string(n, 'a')))), hex) << n;
}

// Feeding the message in pieces of every size must give the one-shot digest (the buffering paths).
TEST(Sha256, IncrementalUpdatesEqualOneShot) {
  std::string m;
  for (int i = 0; i < 300; ++i) m += static_cast<char>((i * 131 + 7) & 0xFF);
  const auto expected = sha256(std::string_view(m));
  for (std::size_t piece = 1; piece <= 130; ++piece) {
    Sha256 h;
    for (std::size_t pos = 0; pos < m.size(); pos += piece) h.update(std::string_view(m).substr(pos, piece));
    EXPECT_EQ(h.finish(), expected) << "piece " << piece;
  }
  Sha256 h;
  h.update(std::string_view("ab"));
  h.reset();
  h.update(std::string_view("abc"));
  EXPECT_EQ(to_hex(h.finish()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
