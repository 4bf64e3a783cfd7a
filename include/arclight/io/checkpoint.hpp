// Crash-safe training checkpoints. A checkpoint is a directory <root>/<name>/ holding named files (for a
// trainer: model.safetensors, optimizer.safetensors, state.json with scheduler step, RNG states,
// epoch/step/sample index, config and format version) plus a MANIFEST listing the SHA-256 and size of
// every file, the checkpoint's name, a sequence number and the format version. This header is generic:
// files are named byte strings; what they mean is the trainer's business.
//
// Save protocol (a single writer per root is assumed):
//   1. remove leftovers of killed writers (hidden ".tmp-*", ".trash-*" entries of root, and checkpoints
//      newer than the `latest` target, which were renamed into place but never committed);
//   2. create a hidden temp dir <root>/.tmp-<name>-XXXXXX; write every file there (temp name, fsync,
//      rename, fsync dir — io/atomic_file.hpp), then MANIFEST the same way;
//   3. move the temp dir into place as <root>/<name> (a rename; replacing an existing <name> is an atomic
//      exchange with renameat2(RENAME_EXCHANGE)), fsync root;
//   4. write the pointer file <root>/latest atomically — the commit point;
//   5. only then prune: keep the newest `keep_last` complete checkpoints (by sequence), moving older ones
//      to a hidden trash dir (atomic) before deleting them.
// A writer killed at any instant therefore leaves the previous checkpoint intact and `latest` pointing at a
// complete checkpoint (the old one, or the new one once step 4 is done).
//
// Load protocol: candidates are the target of `latest` first, then every other directory with a
// MANIFEST, newest sequence first. A candidate is used only if its MANIFEST parses, names this
// directory, has a supported format version, and every listed file exists with the listed size and
// SHA-256. The first valid candidate is returned; when it is not the `latest` target the fallback is
// logged (with each rejected candidate and why) and reported in the result. No valid candidate -> an
// arclight::Error listing every candidate and its reason.
#pragma once

#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/io/atomic_file.hpp"
#include "arclight/io/json.hpp"
#include "arclight/io/sha256.hpp"

namespace arclight::io {

inline constexpr int kCheckpointFormatVersion = 1;
inline constexpr std::string_view kCheckpointFormatName = "arclight-checkpoint";
inline constexpr std::string_view kCheckpointManifest = "MANIFEST";
inline constexpr std::string_view kCheckpointLatest = "latest";

using CheckpointFiles = std::map<std::string, std::vector<std::uint8_t>>;

struct CheckpointSaveOptions {
  // How many complete checkpoints to keep (the new one included). requires: ≥ 2, so the previous
  // checkpoint survives until the next one is complete and can serve as a fallback.
  std::size_t keep_last = 2;
};

struct CheckpointLoadOptions {
  // Where fallbacks are reported (one line each); nullptr = silent (the result still says).
  std::ostream* log = &std::cerr;
};

// A loaded, hash-verified checkpoint.
struct Checkpoint {
  std::string name;
  std::filesystem::path directory;
  std::uint64_t sequence = 0;
  CheckpointFiles files;                // exactly the files listed in the MANIFEST
  bool is_latest = true;                // false: `latest` was missing/invalid and we fell back
  std::vector<std::string> rejected;    // "<candidate>: <reason>" for each candidate skipped before this one
};

// A checkpoint directory whose MANIFEST parses (its files are not verified by listing).
struct CheckpointEntry {
  std::string name;
  std::uint64_t sequence = 0;
  std::filesystem::path directory;
};

namespace detail {

// Names of checkpoints and of their files: one path component of [A-Za-z0-9._-], not hidden, at most
// 200 characters, not one of the reserved names. Keeps every path we build inside root.
inline bool is_simple_name(std::string_view s) {
  if (s.empty() || s.size() > 200 || s[0] == '.') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

struct ManifestFile {
  std::uint64_t size = 0;
  std::string sha256;
};

struct Manifest {
  std::string name;
  std::uint64_t sequence = 0;
  std::int64_t format_version = 0;
  std::map<std::string, ManifestFile> files;
};

inline std::string manifest_to_json(const Manifest& m) {
  json::Value files = json::Value::object();
  for (const auto& [fname, f] : m.files) {
    json::Value entry = json::Value::object();
    entry.set("size", json::Value::unsigned_integer(f.size));
    entry.set("sha256", json::Value::string_value(f.sha256));
    files.set(fname, std::move(entry));
  }
  json::Value root = json::Value::object();
  root.set("format", json::Value::string_value(std::string(kCheckpointFormatName)));
  root.set("format_version", json::Value::integer(m.format_version));
  root.set("name", json::Value::string_value(m.name));
  root.set("sequence", json::Value::unsigned_integer(m.sequence));
  root.set("files", std::move(files));
  return json::dump(root) + "\n";
}

// Parses a MANIFEST; returns the reason on failure (not an exception: a bad manifest is an expected
// outcome of a crash, handled by falling back).
inline std::optional<std::string> parse_manifest(std::string_view text, Manifest& m) {
  json::Value root;
  try {
    if (!json::is_valid_utf8(text)) return "MANIFEST is not valid UTF-8";
    root = json::parse(text);
  } catch (const Error& e) {
    return std::string("MANIFEST is not valid JSON (") + e.what() + ")";
  }
  if (!root.is_object()) return "MANIFEST is not a JSON object";
  const json::Value* format = root.find("format");
  if (!format || !format->is_string() || format->text != kCheckpointFormatName)
    return str_cat("MANIFEST \"format\" is not \"", kCheckpointFormatName, "\"");
  const json::Value* version = root.find("format_version");
  if (!version || json::to_i64(*version, m.format_version) != json::IntStatus::ok)
    return "MANIFEST has no integer \"format_version\"";
  if (m.format_version < 1 || m.format_version > kCheckpointFormatVersion)
    return str_cat("MANIFEST format_version ", m.format_version, " is not supported (this build reads 1..",
                   kCheckpointFormatVersion, ")");
  const json::Value* name = root.find("name");
  if (!name || !name->is_string()) return "MANIFEST has no string \"name\"";
  m.name = name->text;
  const json::Value* seq = root.find("sequence");
  if (!seq || json::to_u64(*seq, m.sequence) != json::IntStatus::ok)
    return "MANIFEST has no non-negative integer \"sequence\"";
  const json::Value* files = root.find("files");
  if (!files || !files->is_object()) return "MANIFEST has no \"files\" object";
  for (const auto& [fname, entry] : files->members) {
    if (!is_simple_name(fname) || fname == kCheckpointManifest)
      return str_cat("MANIFEST lists an invalid file name '", fname, "'");
    ManifestFile f;
    const json::Value* size = entry.find("size");
    const json::Value* hash = entry.find("sha256");
    if (!size || json::to_u64(*size, f.size) != json::IntStatus::ok)
      return str_cat("MANIFEST entry '", fname, "' has no integer \"size\"");
    if (!hash || !hash->is_string() || hash->text.size() != 64)
      return str_cat("MANIFEST entry '", fname, "' has no 64-digit \"sha256\"");
    f.sha256 = hash->text;
    m.files.emplace(fname, std::move(f));
  }
  return std::nullopt;
}

// Reads and verifies the checkpoint in `dir` (expected to be named `name`). On success fills `out`
// and returns nullopt; otherwise returns why it is not usable.
inline std::optional<std::string> try_load_checkpoint_dir(const std::filesystem::path& dir, const std::string& name,
                                                          Checkpoint& out) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return "directory does not exist";
  Manifest m;
  std::vector<std::uint8_t> manifest_bytes;
  try {
    manifest_bytes = read_file(dir / kCheckpointManifest);
  } catch (const Error& e) {
    return std::string("no readable MANIFEST (incomplete checkpoint): ") + e.what();
  }
  const std::string_view text(reinterpret_cast<const char*>(manifest_bytes.data()), manifest_bytes.size());
  if (auto why = parse_manifest(text, m)) return why;
  if (m.name != name) return str_cat("MANIFEST names checkpoint '", m.name, "', not '", name, "'");
  CheckpointFiles files;
  for (const auto& [fname, f] : m.files) {
    std::vector<std::uint8_t> bytes;
    try {
      bytes = read_file(dir / fname);
    } catch (const Error& e) {
      return str_cat("file '", fname, "' listed in MANIFEST is missing or unreadable: ", e.what());
    }
    if (bytes.size() != f.size)
      return str_cat("file '", fname, "' is ", bytes.size(), " bytes, MANIFEST says ", f.size);
    const std::string digest = to_hex(sha256(bytes));
    if (digest != f.sha256)
      return str_cat("file '", fname, "' has SHA-256 ", digest, ", MANIFEST says ", f.sha256);
    files.emplace(fname, std::move(bytes));
  }
  out.name = name;
  out.directory = dir;
  out.sequence = m.sequence;
  out.files = std::move(files);
  return std::nullopt;
}

inline bool is_leftover_entry(const std::string& fname) {
  return fname.rfind(".tmp-", 0) == 0 || fname.rfind(".trash-", 0) == 0 ||
         fname.rfind(std::string(".") + std::string(kCheckpointLatest) + ".tmp-", 0) == 0;
}

inline void remove_tree_noexcept(const std::filesystem::path& p) {
  std::error_code ec;
  std::filesystem::remove_all(p, ec);
}

// mkdtemp in `root` with the given prefix.
inline std::filesystem::path make_temp_dir(const std::filesystem::path& root, const std::string& prefix) {
  std::string tmpl = (root / (prefix + "XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data()))
    fail("io::save_checkpoint", "cannot create a temporary directory in '", root.string(), "': ", errno_text(errno));
  return std::filesystem::path(buf.data());
}

// Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE). Returns false with errno set when the
// kernel or file system does not support it.
inline bool exchange_paths(const std::filesystem::path& a, const std::filesystem::path& b) {
#if defined(__linux__) && defined(SYS_renameat2)
  constexpr unsigned kRenameExchange = 1u << 1;  // RENAME_EXCHANGE from <linux/fs.h>
  return ::syscall(SYS_renameat2, AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), kRenameExchange) == 0;
#else
  (void)a;
  (void)b;
  errno = ENOSYS;
  return false;
#endif
}

// Moves a checkpoint directory out of the visible namespace (atomic rename into a fresh hidden dir),
// then deletes it, so a half-deleted checkpoint is never mistaken for a real one.
inline void retire_directory(const std::filesystem::path& root, const std::filesystem::path& dir) {
  const auto trash = make_temp_dir(root, ".trash-");
  // rename(2) onto an empty directory replaces it.
  if (::rename(dir.c_str(), trash.c_str()) != 0) {
    const int err = errno;
    remove_tree_noexcept(trash);
    fail("io::save_checkpoint", "cannot retire '", dir.string(), "': ", errno_text(err));
  }
  remove_tree_noexcept(trash);
}

}  // namespace detail

// Complete-looking checkpoints in `root` (directories whose MANIFEST parses and names them), newest
// sequence first. Files are not hash-verified here; load_checkpoint does that.
inline std::vector<CheckpointEntry> list_checkpoints(const std::filesystem::path& root) {
  std::vector<CheckpointEntry> out;
  std::error_code ec;
  if (!std::filesystem::is_directory(root, ec)) return out;
  for (const auto& de : std::filesystem::directory_iterator(root, ec)) {
    const std::string fname = de.path().filename().string();
    if (!detail::is_simple_name(fname) || fname == kCheckpointLatest) continue;
    std::error_code ec2;
    if (!de.is_directory(ec2)) continue;
    detail::Manifest m;
    try {
      const auto bytes = read_file(de.path() / kCheckpointManifest);
      if (detail::parse_manifest(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), m))
        continue;
    } catch (const Error&) {
      continue;
    }
    if (m.name != fname) continue;
    out.push_back({fname, m.sequence, de.path()});
  }
  std::sort(out.begin(), out.end(), [](const CheckpointEntry& a, const CheckpointEntry& b) {
    return a.sequence != b.sequence ? a.sequence > b.sequence : a.name > b.name;
  });
  return out;
}

// The name `latest` points to, or nullopt when the pointer is absent or not a valid name.
inline std::optional<std::string> read_latest_pointer(const std::filesystem::path& root) {
  std::vector<std::uint8_t> bytes;
  try {
    bytes = read_file(root / kCheckpointLatest);
  } catch (const Error&) {
    return std::nullopt;
  }
  std::string s(bytes.begin(), bytes.end());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  if (!detail::is_simple_name(s) || s == kCheckpointLatest) return std::nullopt;
  return s;
}

// Saves `files` as checkpoint `name` under `root` with the protocol in the file comment.
// requires: name and file names are simple names ([A-Za-z0-9._-], not starting with '.', ≤ 200 chars;
// name ≠ "latest", no file named "MANIFEST"); options.keep_last ≥ 2; one writer per root at a time.
// ensures: on return <root>/<name> is complete and durable, `latest` names it, and at most keep_last
// complete checkpoints remain. If `name` already exists it is replaced atomically. Throws arclight::Error
// on any I/O failure, leaving the previous checkpoints and `latest` intact.
inline std::filesystem::path save_checkpoint(const std::filesystem::path& root, const std::string& name,
                                             const CheckpointFiles& files, const CheckpointSaveOptions& options = {}) {
  const char* where = "io::save_checkpoint";
  if (!detail::is_simple_name(name) || name == kCheckpointLatest)
    fail(where, "invalid checkpoint name '", name,
         "', expected a non-hidden name of [A-Za-z0-9._-] of at most 200 characters other than 'latest'");
  for (const auto& [fname, bytes] : files)
    if (!detail::is_simple_name(fname) || fname == kCheckpointManifest)
      fail(where, "invalid file name '", fname, "' in checkpoint '", name,
           "', expected a non-hidden name of [A-Za-z0-9._-] other than 'MANIFEST'");
  if (options.keep_last < 2)
    fail(where, "keep_last = ", options.keep_last, ", expected ≥ 2 (the previous checkpoint is the fallback)");

  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) fail(where, "cannot create checkpoint root '", root.string(), "': ", ec.message());

  // 1. leftovers of a killed writer
  for (const auto& de : std::filesystem::directory_iterator(root, ec)) {
    const std::string fname = de.path().filename().string();
    if (detail::is_leftover_entry(fname)) detail::remove_tree_noexcept(de.path());
  }

  // Checkpoints newer than the one `latest` names were never committed (a writer was killed between
  // step 3 and step 4) and belong to a timeline the run has abandoned by resuming from `latest`:
  // retire them so they can neither be kept in place of committed history nor be fallen back to.
  // With no usable `latest` nothing can be judged, so nothing is removed.
  auto existing = list_checkpoints(root);
  if (const auto latest = read_latest_pointer(root)) {
    const auto it = std::find_if(existing.begin(), existing.end(),
                                 [&](const CheckpointEntry& e) { return e.name == *latest; });
    if (it != existing.end()) {
      const std::uint64_t committed = it->sequence;
      for (const auto& e : existing)
        if (e.sequence > committed && e.name != name) detail::retire_directory(root, e.directory);
      existing = list_checkpoints(root);
    }
  }
  std::uint64_t sequence = 1;
  for (const auto& e : existing) sequence = std::max(sequence, e.sequence + 1);

  // 2. everything into a hidden temp dir
  const auto tmp = detail::make_temp_dir(root, ".tmp-" + name + "-");
  const auto final_dir = root / name;
  try {
    detail::Manifest m;
    m.name = name;
    m.sequence = sequence;
    m.format_version = kCheckpointFormatVersion;
    for (const auto& [fname, bytes] : files) {
      write_file_atomic(tmp / fname, std::span<const std::uint8_t>(bytes));
      m.files[fname] = {bytes.size(), to_hex(sha256(bytes))};
    }
    write_file_atomic(tmp / kCheckpointManifest, detail::manifest_to_json(m));
    fsync_directory(tmp);

    // 3. into place
    if (std::filesystem::exists(final_dir, ec)) {
      if (detail::exchange_paths(tmp, final_dir)) {
        fsync_directory(root);
        detail::remove_tree_noexcept(tmp);  // now holds the replaced checkpoint
      } else {
        // No atomic exchange on this file system: retire the old one first. A kill in between loses
        // `name` (the loader then falls back to the previous checkpoint).
        detail::retire_directory(root, final_dir);
        if (::rename(tmp.c_str(), final_dir.c_str()) != 0)
          fail(where, "cannot move '", tmp.string(), "' to '", final_dir.string(), "': ", detail::errno_text(errno));
        fsync_directory(root);
      }
    } else {
      if (::rename(tmp.c_str(), final_dir.c_str()) != 0)
        fail(where, "cannot move '", tmp.string(), "' to '", final_dir.string(), "': ", detail::errno_text(errno));
      fsync_directory(root);
    }
  } catch (...) {
    detail::remove_tree_noexcept(tmp);
    throw;
  }

  // 4. the commit point
  write_file_atomic(root / kCheckpointLatest, name + "\n");

  // 5. prune, newest sequence first; the new checkpoint has the highest sequence so it is always kept.
  const auto all = list_checkpoints(root);
  for (std::size_t i = options.keep_last; i < all.size(); ++i) {
    if (all[i].name == name) continue;
    detail::retire_directory(root, all[i].directory);
  }
  fsync_directory(root);
  return final_dir;
}

// Loads and verifies one specific checkpoint <root>/<name> (no fallback).
// ensures: the files as saved, size and SHA-256 verified; otherwise throws arclight::Error with the reason.
inline Checkpoint load_checkpoint_named(const std::filesystem::path& root, const std::string& name) {
  if (!detail::is_simple_name(name) || name == kCheckpointLatest)
    fail("io::load_checkpoint_named", "invalid checkpoint name '", name, "'");
  Checkpoint ck;
  if (auto why = detail::try_load_checkpoint_dir(root / name, name, ck))
    fail("io::load_checkpoint_named", "checkpoint '", name, "' in '", root.string(), "' is not usable: ", *why);
  ck.is_latest = read_latest_pointer(root) == name;
  return ck;
}

// Loads the newest valid checkpoint under `root` (see the file comment for the order and the checks).
// ensures: the returned files are byte-identical to what save_checkpoint was given for that checkpoint
// (size and SHA-256 verified). Throws arclight::Error when root holds no valid checkpoint, listing every
// candidate and why it was rejected.
inline Checkpoint load_checkpoint(const std::filesystem::path& root, const CheckpointLoadOptions& options = {}) {
  const char* where = "io::load_checkpoint";
  std::vector<std::string> candidates;
  std::vector<std::string> rejected;
  const auto latest = read_latest_pointer(root);
  std::error_code ec;
  if (latest) {
    candidates.push_back(*latest);
  } else if (std::filesystem::exists(root / kCheckpointLatest, ec)) {
    rejected.push_back(str_cat("'", kCheckpointLatest, "' pointer: unreadable or not a valid checkpoint name"));
  }
  for (const auto& e : list_checkpoints(root))
    if (!latest || e.name != *latest) candidates.push_back(e.name);

  for (const auto& name : candidates) {
    Checkpoint ck;
    if (auto why = detail::try_load_checkpoint_dir(root / name, name, ck)) {
      rejected.push_back(str_cat("'", name, "': ", *why));
      continue;
    }
    ck.is_latest = latest && name == *latest;
    ck.rejected = rejected;
    if (!ck.is_latest && options.log) {
      *options.log << where << ": WARNING: latest checkpoint in '" << root.string() << "' is not usable; "
                   << "loaded '" << name << "' (sequence " << ck.sequence << ") instead. Rejected:";
      for (const auto& r : rejected) *options.log << " [" << r << "]";
      if (rejected.empty()) *options.log << " [no 'latest' pointer]";
      *options.log << "\n";
    }
    return ck;
  }
  if (candidates.empty() && rejected.empty())
    fail(where, "no checkpoint found in '", root.string(), "' (no 'latest' pointer and no checkpoint directories)");
  std::string reasons;
  for (const auto& r : rejected) reasons += "\n  " + r;
  fail(where, "no valid checkpoint in '", root.string(), "'; rejected ", rejected.size(), " candidate(s):", reasons);
}

}  // namespace arclight::io
