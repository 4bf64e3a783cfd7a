// Image-folder datasets: root/<class>/**/*.{jpg,jpeg,png}, one sub-folder per class (as torchvision's
// ImageFolder). Classes are the sub-folder names in sorted order and files are sorted by their path, so
// the class index map and sample order are the same on every machine; the map is saved with a run
// (save_class_map) so evaluation uses the same indices.
#pragma once

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/data/dataset.hpp"
#include "arclight/data/image_io.hpp"

namespace arclight::data {

struct ImageFolderOptions {
  std::vector<std::string> extensions = {".jpg", ".jpeg", ".png"};  // matched case-insensitively
  bool allow_empty_classes = false;
  DecodeOptions decode;
};

class ImageFolderDataset final : public Dataset {
 public:
  // requires: `root` is a folder with at least one class sub-folder (hidden folders ignored), each with
  // at least one image unless opts.allow_empty_classes. throws: arclight::Error naming the folder.
  explicit ImageFolderDataset(const std::filesystem::path& root, ImageFolderOptions opts = {})
      : opts_(std::move(opts)), root_(root) {
    namespace fs = std::filesystem;
    const std::string where = str_cat("ImageFolderDataset: ", root.string());
    std::error_code ec;
    ARCLIGHT_CHECK(fs::is_directory(root, ec), where, "not a directory");
    std::vector<fs::path> class_dirs;
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_directory() && e.path().filename().string()[0] != '.') class_dirs.push_back(e.path());
    std::sort(class_dirs.begin(), class_dirs.end());
    ARCLIGHT_CHECK(!class_dirs.empty(), where, "no class sub-folders, expected root/<class>/<image>");
    for (std::size_t c = 0; c < class_dirs.size(); ++c) {
      class_names_.push_back(class_dirs[c].filename().string());
      std::vector<std::string> files;
      for (const auto& e : fs::recursive_directory_iterator(class_dirs[c])) {
        if (!e.is_regular_file()) continue;
        std::string ext = e.path().extension().string();
        for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (std::find(opts_.extensions.begin(), opts_.extensions.end(), ext) != opts_.extensions.end())
          files.push_back(e.path().string());
      }
      std::sort(files.begin(), files.end());
      ARCLIGHT_CHECK(!files.empty() || opts_.allow_empty_classes, where, "class folder '", class_dirs[c].string(),
                     "' holds no image with an accepted extension");
      for (auto& f : files) {
        paths_.push_back(std::move(f));
        labels_.push_back(static_cast<std::int64_t>(c));
      }
    }
  }

  std::size_t size() const override { return paths_.size(); }
  std::int64_t label(std::size_t i) const override {
    check_index(i, "ImageFolderDataset::label");
    return labels_[i];
  }
  Image load(std::size_t i) const override {
    check_index(i, "ImageFolderDataset::load");
    return read_image(paths_[i], opts_.decode);
  }
  std::string name(std::size_t i) const override {
    check_index(i, "ImageFolderDataset::name");
    return paths_[i];
  }
  std::size_t num_classes() const override { return class_names_.size(); }
  const std::vector<std::string>& class_names() const override { return class_names_; }
  const std::filesystem::path& root() const { return root_; }

 private:
  ImageFolderOptions opts_;
  std::filesystem::path root_;
  std::vector<std::string> paths_;
  std::vector<std::int64_t> labels_;
  std::vector<std::string> class_names_;
};

// Saves "index<TAB>name" lines (atomically). requires: names without tab or newline.
inline void save_class_map(const std::filesystem::path& path, const std::vector<std::string>& names) {
  std::string text = "# arclight class map v1: index<TAB>name\n";
  for (std::size_t i = 0; i < names.size(); ++i) {
    ARCLIGHT_CHECK(names[i].find_first_of("\t\r\n") == std::string::npos, "save_class_map", "class name '", names[i],
                   "' contains a tab or newline");
    text += str_cat(i, "\t", names[i], "\n");
  }
  write_file_atomic(path, std::vector<std::uint8_t>(text.begin(), text.end()));
}

// Parses the text of a map written by save_class_map; `name` (the file) is named in every error. Blank lines and
// lines starting with '#' are skipped. throws: on a malformed line or indices not 0, 1, 2, ...
inline std::vector<std::string> parse_class_map(std::string_view text, std::string_view name) {
  std::vector<std::string> names;
  std::size_t lineno = 0, pos = 0;
  while (pos < text.size()) {
    const std::size_t nl = text.find('\n', pos);
    const std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    const auto tab = line.find('\t');
    ARCLIGHT_CHECK(tab != std::string_view::npos, "load_class_map", name, " line ", lineno,
                   ": expected index<TAB>name");
    ARCLIGHT_CHECK(line.substr(0, tab) == std::to_string(names.size()), "load_class_map", name, " line ", lineno,
                   ": index '", line.substr(0, tab), "', expected ", names.size());
    names.emplace_back(line.substr(tab + 1));
  }
  return names;
}

// Loads a map written by save_class_map (see parse_class_map; errors name the path).
inline std::vector<std::string> load_class_map(const std::filesystem::path& path) {
  const std::vector<std::uint8_t> bytes = read_file_bytes(path);
  return parse_class_map(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path.string());
}

}  // namespace arclight::data
