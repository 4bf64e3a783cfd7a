// CSV-listed image datasets (the layout of the reference competition's train.csv: one row per image, a
// path column and a label column, with a header). The parser follows RFC 4180: comma separated, fields
// optionally in double quotes, "" for a quote inside quotes, commas and newlines allowed inside quotes,
// LF or CRLF line ends, an optional UTF-8 BOM. Malformed input is an error with the line number; relative
// image paths resolve against the CSV's own folder and every listed file must exist.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "arclight/core/error.hpp"
#include "arclight/data/dataset.hpp"
#include "arclight/data/image_io.hpp"

namespace arclight::data {

struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::size_t> row_lines;  // 1-based line where each row starts

  // Column index of `column`, or -1.
  std::ptrdiff_t column(std::string_view name) const {
    for (std::size_t i = 0; i < header.size(); ++i)
      if (header[i] == name) return static_cast<std::ptrdiff_t>(i);
    return -1;
  }
};

// Parses CSV text with a header row. ensures: every row has header.size() fields; blank lines skipped.
// throws: arclight::Error naming `name` and the line for an unterminated quote, text after a closing
// quote, a quote inside an unquoted field, a row with the wrong field count, an empty or duplicate
// header name, or a missing header.
inline CsvTable parse_csv(std::string_view text, std::string_view name = "<memory>") {
  const std::string where = str_cat("parse_csv: ", name);
  if (text.size() >= 3 && static_cast<unsigned char>(text[0]) == 0xEF && static_cast<unsigned char>(text[1]) == 0xBB &&
      static_cast<unsigned char>(text[2]) == 0xBF)
    text.remove_prefix(3);
  CsvTable table;
  std::vector<std::string> record;
  std::string field;
  std::size_t line = 1, record_line = 1;
  std::size_t i = 0;
  const std::size_t n = text.size();
  bool record_has_content = false;

  auto end_record = [&]() {
    record.push_back(std::move(field));
    field.clear();
    const bool blank = !record_has_content && record.size() == 1 && record[0].empty();
    if (!blank) {
      if (table.header.empty()) {
        table.header = std::move(record);
        for (std::size_t c = 0; c < table.header.size(); ++c) {
          ARCLIGHT_CHECK(!table.header[c].empty(), where, "line ", record_line, ": header column ", c + 1,
                         " has an empty name");
          for (std::size_t d = 0; d < c; ++d)
            ARCLIGHT_CHECK(table.header[d] != table.header[c], where, "line ", record_line,
                           ": duplicate header column '", table.header[c], "'");
        }
      } else {
        ARCLIGHT_CHECK(record.size() == table.header.size(), where, "line ", record_line, " has ", record.size(),
                       " fields, expected ", table.header.size(), " (as in the header)");
        table.rows.push_back(std::move(record));
        table.row_lines.push_back(record_line);
      }
    }
    record.clear();
    record_has_content = false;
  };

  while (i < n) {
    // Start of a field.
    if (text[i] == '"') {
      record_has_content = true;
      const std::size_t open_line = line;
      ++i;
      bool closed = false;
      while (i < n) {
        const char c = text[i];
        if (c == '"') {
          if (i + 1 < n && text[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        if (c == '\n') ++line;
        field += c;
        ++i;
      }
      ARCLIGHT_CHECK(closed, where, "unterminated quoted field starting on line ", open_line);
      if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
        fail(where, "line ", line, ": unexpected character '", text[i], "' after a closing quote");
    } else {
      while (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
        ARCLIGHT_CHECK(text[i] != '"', where, "line ", line, ": quote inside an unquoted field");
        field += text[i];
        ++i;
      }
    }
    // Field delimiter or record end.
    if (i >= n) break;
    if (text[i] == ',') {
      record_has_content = true;
      record.push_back(std::move(field));
      field.clear();
      ++i;
      if (i >= n) break;  // trailing comma at EOF: the last (empty) field is added below
      continue;
    }
    // '\n', '\r\n' or a lone '\r'
    if (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
    ++i;
    end_record();
    ++line;
    record_line = line;
  }
  if (record_has_content || !field.empty() || !record.empty()) end_record();
  ARCLIGHT_CHECK(!table.header.empty(), where, "no header row (empty file)");
  return table;
}

struct CsvDatasetOptions {
  std::string path_column = "path";
  std::string label_column = "label";
  // Folder relative paths resolve against; empty = the CSV file's folder.
  std::filesystem::path image_root;
  // Appended to every path field (e.g. ".jpg" when the CSV holds ids).
  std::string path_suffix;
  // Check at construction that every listed file exists (the error names the first missing one).
  bool check_files = true;
  DecodeOptions decode;
};

// A dataset listed by a CSV file. Labels are arbitrary strings; classes are their sorted unique values
// (numerically sorted when every label is an integer), so "label" -> class index is stable across runs.
class CsvDataset final : public Dataset {
 public:
  static CsvDataset from_file(const std::filesystem::path& csv_path, CsvDatasetOptions opts = {}) {
    const auto bytes = read_file_bytes(csv_path, std::size_t{1} << 30);
    if (opts.image_root.empty()) opts.image_root = csv_path.parent_path();
    return CsvDataset(parse_csv(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                                csv_path.string()),
                      std::move(opts), csv_path.string());
  }
  static CsvDataset from_text(std::string_view text, CsvDatasetOptions opts, std::string_view name = "<memory>") {
    return CsvDataset(parse_csv(text, name), std::move(opts), std::string(name));
  }

  // requires: the table has opts.path_column and opts.label_column; every path non-empty (and existing,
  // when opts.check_files).
  CsvDataset(const CsvTable& table, CsvDatasetOptions opts, std::string name) : opts_(std::move(opts)) {
    const std::string where = str_cat("CsvDataset: ", name);
    const auto pc = table.column(opts_.path_column);
    const auto lc = table.column(opts_.label_column);
    if (pc < 0 || lc < 0) {
      std::string cols;
      for (const auto& h : table.header) cols += (cols.empty() ? "" : ", ") + h;
      fail(where, "missing column '", pc < 0 ? opts_.path_column : opts_.label_column, "': header has [", cols,
           "], expected columns '", opts_.path_column, "' and '", opts_.label_column, "'");
    }
    std::vector<std::string> raw_labels;
    for (std::size_t r = 0; r < table.rows.size(); ++r) {
      const auto& row = table.rows[r];
      const std::string& p = row[static_cast<std::size_t>(pc)];
      ARCLIGHT_CHECK(!p.empty(), where, "line ", table.row_lines[r], ": empty '", opts_.path_column, "' field");
      ARCLIGHT_CHECK(!row[static_cast<std::size_t>(lc)].empty(), where, "line ", table.row_lines[r], ": empty '",
                     opts_.label_column, "' field");
      std::filesystem::path full = std::filesystem::path(p + opts_.path_suffix);
      if (full.is_relative()) full = opts_.image_root / full;
      if (opts_.check_files) {
        std::error_code ec;
        ARCLIGHT_CHECK(std::filesystem::is_regular_file(full, ec), where, "line ", table.row_lines[r],
                       ": image file '", full.string(), "' does not exist");
      }
      paths_.push_back(full.string());
      raw_labels.push_back(row[static_cast<std::size_t>(lc)]);
    }
    // Class order: numeric when every label is an integer, else lexicographic.
    std::vector<std::string> uniq = raw_labels;
    std::sort(uniq.begin(), uniq.end());
    uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
    auto is_int = [](const std::string& s) {
      std::size_t k = (s[0] == '-' || s[0] == '+') ? 1 : 0;
      if (k >= s.size() || s.size() - k > 18) return false;
      for (; k < s.size(); ++k)
        if (s[k] < '0' || s[k] > '9') return false;
      return true;
    };
    if (!uniq.empty() && std::all_of(uniq.begin(), uniq.end(), is_int))
      std::sort(uniq.begin(), uniq.end(),
                [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
    // Distinct strings may denote one integer ("7" and "07"); keep them distinct classes but ordered.
    std::map<std::string, std::int64_t> index;
    for (std::size_t c = 0; c < uniq.size(); ++c) index.emplace(uniq[c], static_cast<std::int64_t>(c));
    class_names_ = uniq;
    labels_.reserve(raw_labels.size());
    for (const auto& l : raw_labels) labels_.push_back(index.at(l));
  }

  std::size_t size() const override { return paths_.size(); }
  std::int64_t label(std::size_t i) const override {
    check_index(i, "CsvDataset::label");
    return labels_[i];
  }
  Image load(std::size_t i) const override {
    check_index(i, "CsvDataset::load");
    return read_image(paths_[i], opts_.decode);
  }
  std::string name(std::size_t i) const override {
    check_index(i, "CsvDataset::name");
    return paths_[i];
  }
  std::size_t num_classes() const override { return class_names_.size(); }
  const std::vector<std::string>& class_names() const override { return class_names_; }
  const std::string& path(std::size_t i) const { return paths_.at(i); }

 private:
  CsvDatasetOptions opts_;
  std::vector<std::string> paths_;
  std::vector<std::int64_t> labels_;
  std::vector<std::string> class_names_;
};

}  // namespace arclight::data
