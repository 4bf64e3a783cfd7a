// Atomic file writes: content round trip, replacement of an existing file, no leftovers when a write is
// abandoned (RAII), and clear errors naming the path.
#include <gtest/gtest.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "arclight/io/atomic_file.hpp"
#include "io_test_util.hpp"

namespace {

using arclight::Error;
using arclight::io::AtomicFileWriter;
using arclight::io::read_file;
using arclight::io::write_file_atomic;
using arclight::io::testing::bytes_of;
using arclight::io::testing::ScratchDir;

std::size_t count_entries(const std::filesystem::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

TEST(AtomicFile, WritesAndReplacesContent) {
  ScratchDir dir;
  const auto p = dir / "weights.bin";
  std::vector<std::uint8_t> big(3 * 65536 + 17);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 2654435761u >> 13);
  write_file_atomic(p, big);
  EXPECT_EQ(read_file(p), big);
  write_file_atomic(p, std::string_view("short"));
  EXPECT_EQ(read_file(p), bytes_of("short"));
  write_file_atomic(p, std::string_view(""));
  EXPECT_TRUE(read_file(p).empty());
  EXPECT_EQ(count_entries(dir.path()), 1u);  // no temporary files left
  const auto perms = std::filesystem::status(p).permissions();
  EXPECT_NE(perms & std::filesystem::perms::owner_read, std::filesystem::perms::none);
  EXPECT_NE(perms & std::filesystem::perms::others_read, std::filesystem::perms::none);
}

TEST(AtomicFile, StreamedPiecesAreConcatenated) {
  ScratchDir dir;
  const auto p = dir / "f";
  AtomicFileWriter w(p);
  w.write(std::string_view("ab"));
  w.write(std::string_view(""));
  w.write(std::string_view("cde"));
  EXPECT_FALSE(std::filesystem::exists(p));  // nothing visible before commit
  EXPECT_TRUE(std::filesystem::exists(w.temp_path()));
  EXPECT_EQ(w.temp_path().parent_path(), dir.path());
  w.commit();
  EXPECT_EQ(read_file(p), bytes_of("abcde"));
  EXPECT_THROW(w.write(std::string_view("x")), Error);
  EXPECT_THROW(w.commit(), Error);
}

TEST(AtomicFile, AbandonedWriteLeavesTargetAndDirectoryUntouched) {
  ScratchDir dir;
  const auto p = dir / "state.json";
  write_file_atomic(p, std::string_view("old"));
  std::filesystem::path temp;
  try {
    AtomicFileWriter w(p);
    temp = w.temp_path();
    w.write(std::string_view("new but never committed"));
    throw std::runtime_error("simulated failure mid-write");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(temp.empty());
  EXPECT_FALSE(std::filesystem::exists(temp));
  EXPECT_EQ(read_file(p), bytes_of("old"));
  EXPECT_EQ(count_entries(dir.path()), 1u);
}

TEST(AtomicFile, ErrorsNameThePath) {
  ScratchDir dir;
  const auto missing_dir = dir / "no-such-dir";
  try {
    write_file_atomic(missing_dir / "x.bin", std::string_view("data"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("io::AtomicFileWriter"), std::string::npos) << m;
    EXPECT_NE(m.find("no-such-dir"), std::string::npos) << m;
    EXPECT_NE(m.find("No such file or directory"), std::string::npos) << m;
  }
  try {
    read_file(dir / "absent.bin");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("io::read_file: cannot open"), std::string::npos) << m;
    EXPECT_NE(m.find("absent.bin"), std::string::npos) << m;
  }
  try {
    read_file(dir.path());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
}

}  // namespace
