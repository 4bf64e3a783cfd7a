// Crash-safe file writes for weights, checkpoints and pointer files (POSIX). A file is written under a
// temporary name in the same directory (so the final rename never crosses a file system), fully
// written, fsynced, closed, renamed over the target, and the directory is fsynced so the rename itself
// is durable. Readers therefore see either the old file or the complete new one, never a torn file,
// whatever moment the writer is killed at. The temporary file is removed if anything fails before the
// rename (RAII), and a killed writer leaves at most a hidden ".<name>.tmp-XXXXXX" file behind.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "arclight/core/error.hpp"

namespace arclight::io {

namespace detail {

inline std::string errno_text(int err) { return std::strerror(err); }

// write(2) until everything is written, retrying on EINTR and short writes.
inline void write_all_fd(int fd, const std::uint8_t* p, std::size_t n, const char* where,
                         const std::filesystem::path& path) {
  while (n > 0) {
    // Keep single calls well below the 2 GiB Linux per-call cap.
    const std::size_t chunk = n < (std::size_t{1} << 30) ? n : (std::size_t{1} << 30);
    const ssize_t w = ::write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(where, "cannot write '", path.string(), "': ", errno_text(errno));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

inline void fsync_fd(int fd, const char* where, const std::filesystem::path& path) {
  while (::fsync(fd) != 0) {
    if (errno == EINTR) continue;
    fail(where, "cannot fsync '", path.string(), "': ", errno_text(errno));
  }
}

inline std::filesystem::path parent_or_dot(const std::filesystem::path& p) {
  auto parent = p.parent_path();
  return parent.empty() ? std::filesystem::path(".") : parent;
}

}  // namespace detail

// Makes the entries of `dir` (creations, renames, removals) durable.
// requires: dir exists. ensures: fsync(2) on the directory succeeded, else throws arclight::Error.
inline void fsync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("io::fsync_directory", "cannot open directory '", dir.string(), "': ", detail::errno_text(errno));
  int rc;
  while ((rc = ::fsync(fd)) != 0 && errno == EINTR) {
  }
  const int err = errno;
  ::close(fd);
  // Some file systems do not support fsync on directories (EINVAL); their renames are as durable as
  // they can be made, so that is not an error.
  if (rc != 0 && err != EINVAL)
    fail("io::fsync_directory", "cannot fsync directory '", dir.string(), "': ", detail::errno_text(err));
}

// RAII writer of one file that appears atomically at `target` on commit().
//   AtomicFileWriter w(path); w.write(a); w.write(b); w.commit();
// If the writer is destroyed without commit() (an exception, an early return), the temporary file is
// closed and unlinked and `target` is left untouched.
class AtomicFileWriter {
 public:
  // requires: the directory of `target` exists and is writable.
  // ensures: a temporary file ".<target name>.tmp-XXXXXX" was created next to the target.
  explicit AtomicFileWriter(std::filesystem::path target) : target_(std::move(target)) {
    const auto dir = detail::parent_or_dot(target_);
    const std::string name = target_.filename().string();
    if (name.empty() || name == "." || name == "..")
      fail("io::AtomicFileWriter", "target '", target_.string(), "' does not name a file");
    std::string tmpl = (dir / ("." + name + ".tmp-XXXXXX")).string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    fd_ = ::mkostemp(buf.data(), O_CLOEXEC);
    if (fd_ < 0)
      fail("io::AtomicFileWriter", "cannot create a temporary file in '", dir.string(), "' for '", target_.string(),
           "': ", detail::errno_text(errno));
    temp_ = buf.data();
    ::fchmod(fd_, 0644);  // mkstemp creates 0600; weights and checkpoints are ordinary readable files
  }

  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  ~AtomicFileWriter() { abandon(); }

  // Appends bytes to the temporary file. requires: not committed.
  void write(const void* data, std::size_t size) {
    if (fd_ < 0) fail("io::AtomicFileWriter", "write to '", target_.string(), "' after commit or failure");
    try {
      detail::write_all_fd(fd_, static_cast<const std::uint8_t*>(data), size, "io::AtomicFileWriter", temp_);
    } catch (...) {
      abandon();
      throw;
    }
  }
  void write(std::span<const std::uint8_t> bytes) { write(bytes.data(), bytes.size()); }
  void write(std::string_view s) { write(s.data(), s.size()); }

  // fsync the data, close, rename onto the target, fsync the directory.
  // ensures: on return the target holds exactly the bytes written, durably; on throw the target is
  // unchanged (unless the final directory fsync failed, in which case the rename may already be visible).
  void commit() {
    if (fd_ < 0) fail("io::AtomicFileWriter", "commit of '", target_.string(), "' after commit or failure");
    try {
      detail::fsync_fd(fd_, "io::AtomicFileWriter", temp_);
    } catch (...) {
      abandon();
      throw;
    }
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) {
      const int err = errno;
      ::unlink(temp_.c_str());
      temp_.clear();
      fail("io::AtomicFileWriter", "cannot close '", target_.string(), "': ", detail::errno_text(err));
    }
    if (::rename(temp_.c_str(), target_.c_str()) != 0) {
      const int err = errno;
      ::unlink(temp_.c_str());
      temp_.clear();
      fail("io::AtomicFileWriter", "cannot rename the temporary file onto '", target_.string(),
           "': ", detail::errno_text(err));
    }
    temp_.clear();
    fsync_directory(detail::parent_or_dot(target_));
  }

  const std::filesystem::path& target() const { return target_; }
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  void abandon() noexcept {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (!temp_.empty()) {
      ::unlink(temp_.c_str());
      temp_.clear();
    }
  }

  std::filesystem::path target_;
  std::filesystem::path temp_;
  int fd_ = -1;
};

// Writes `bytes` to `path` atomically and durably (see the file comment).
// requires: the parent directory exists. ensures: path holds exactly `bytes`, or throws and path is unchanged.
inline void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> bytes) {
  AtomicFileWriter w(path);
  w.write(bytes);
  w.commit();
}
inline void write_file_atomic(const std::filesystem::path& path, std::string_view text) {
  AtomicFileWriter w(path);
  w.write(text);
  w.commit();
}

// Reads a whole regular file into memory. Throws arclight::Error naming the file on any failure.
inline std::vector<std::uint8_t> read_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("io::read_file", "cannot open '", path.string(), "': ", detail::errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("io::read_file", "cannot stat '", path.string(), "': ", detail::errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("io::read_file", "'", path.string(), "' is not a regular file");
  }
  // One spare byte so that reaching EOF of an unchanged file never reallocates; a file that grows
  // while being read is still read to its end.
  std::vector<std::uint8_t> out(static_cast<std::size_t>(st.st_size) + 1);
  std::size_t used = 0;
  for (;;) {
    if (used == out.size()) out.resize(out.size() + (std::size_t{1} << 16));
    const ssize_t r = ::read(fd, out.data() + used, out.size() - used);
    if (r < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      fail("io::read_file", "cannot read '", path.string(), "': ", detail::errno_text(err));
    }
    if (r == 0) break;
    used += static_cast<std::size_t>(r);
  }
  out.resize(used);
  ::close(fd);
  return out;
}

}  // namespace arclight::io
