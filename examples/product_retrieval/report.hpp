// The run report: one self-contained HTML file (no network, no scripts) with the run's config, training
// curves (loss, lr, validation accuracy) as inline SVG, the metrics table, a confusion-matrix heatmap,
// per-class accuracy and query → top-5 neighbour thumbnails (correct ones green, wrong ones red), worst
// failures first. Thumbnails are inline PNG data URIs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "arclight/data/image_io.hpp"
#include "arclight/io/atomic_file.hpp"

namespace retrieval_app {

struct CurvePoint {
  double x;
  double y;
};

struct Curve {
  std::string name;
  std::string color;
  std::vector<CurvePoint> points;
};

struct NeighbourRow {
  std::string query_png_b64;
  std::int64_t query_label;
  std::int64_t predicted;
  double margin;  // sort key: most confident failures first
  std::vector<std::string> neighbour_png_b64;
  std::vector<std::int64_t> neighbour_labels;
  std::vector<double> neighbour_scores;
};

struct ReportData {
  std::string title;
  std::vector<std::pair<std::string, std::string>> config;
  std::vector<std::pair<std::string, std::string>> metrics;
  std::vector<Curve> loss_curves, lr_curves, acc_curves;
  std::vector<std::string> class_names;
  std::vector<std::vector<std::int64_t>> confusion;
  std::vector<double> per_class_accuracy;
  std::vector<NeighbourRow> neighbours;
};

inline std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

inline std::string base64(const std::vector<std::uint8_t>& bytes) {
  static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const std::uint32_t v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += tbl[v >> 18], out += tbl[(v >> 12) & 63], out += tbl[(v >> 6) & 63], out += tbl[v & 63];
  }
  if (i + 1 == bytes.size()) {
    const std::uint32_t v = bytes[i] << 16;
    out += tbl[v >> 18], out += tbl[(v >> 12) & 63], out += "==";
  } else if (i + 2 == bytes.size()) {
    const std::uint32_t v = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += tbl[v >> 18], out += tbl[(v >> 12) & 63], out += tbl[(v >> 6) & 63], out += '=';
  }
  return out;
}

// A line chart of one or more curves, axes scaled to the data.
inline std::string svg_chart(const std::string& title, const std::vector<Curve>& curves, const std::string& xlabel) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& c : curves)
    for (const auto& p : c.points)
      if (std::isfinite(p.y)) x0 = std::min(x0, p.x), x1 = std::max(x1, p.x), y0 = std::min(y0, p.y), y1 = std::max(y1, p.y);
  std::ostringstream o;
  const int W = 420, H = 240, L = 56, R = 12, T = 28, B = 36;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' class='chart'>";
  o << "<text x='" << W / 2 << "' y='16' text-anchor='middle' class='ct'>" << html_escape(title) << "</text>";
  if (!(x1 >= x0)) {
    o << "<text x='" << W / 2 << "' y='" << H / 2 << "' text-anchor='middle'>no data</text></svg>";
    return o.str();
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1e-9 + std::abs(y0) * 0.1, y0 -= std::abs(y0) * 0.1;
  auto sx = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto sy = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  o << "<rect x='" << L << "' y='" << T << "' width='" << W - L - R << "' height='" << H - T - B
    << "' fill='none' stroke='#999'/>";
  for (int i = 0; i <= 4; ++i) {
    const double y = y0 + (y1 - y0) * i / 4;
    o << "<text x='" << L - 4 << "' y='" << sy(y) + 4 << "' text-anchor='end' class='ax'>" << std::setprecision(3) << y
      << "</text>";
  }
  o << "<text x='" << L << "' y='" << H - 8 << "' class='ax'>" << x0 << "</text><text x='" << W - R << "' y='" << H - 8
    << "' text-anchor='end' class='ax'>" << x1 << "</text><text x='" << (L + W - R) / 2 << "' y='" << H - 8
    << "' text-anchor='middle' class='ax'>" << html_escape(xlabel) << "</text>";
  int legend = 0;
  for (const auto& c : curves) {
    o << "<polyline fill='none' stroke='" << c.color << "' stroke-width='1.5' points='";
    for (const auto& p : c.points)
      if (std::isfinite(p.y)) o << sx(p.x) << "," << sy(p.y) << " ";
    o << "'/>";
    o << "<text x='" << L + 6 << "' y='" << T + 14 + 14 * legend++ << "' fill='" << c.color << "' class='ax'>"
      << html_escape(c.name) << "</text>";
  }
  o << "</svg>";
  return o.str();
}

inline std::string svg_confusion(const std::vector<std::vector<std::int64_t>>& cm, const std::vector<std::string>& names) {
  const int n = static_cast<int>(cm.size()), cell = n > 20 ? 12 : 30, L = 110, T = 110;
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << L + n * cell + 10 << "' height='" << T + n * cell + 10
    << "' class='cm'>";
  for (int i = 0; i < n; ++i) {
    std::int64_t total = 0;
    for (auto v : cm[static_cast<std::size_t>(i)]) total += v;
    const std::string name = i < static_cast<int>(names.size()) ? names[static_cast<std::size_t>(i)] : std::to_string(i);
    o << "<text x='" << L - 4 << "' y='" << T + i * cell + cell * 0.65 << "' text-anchor='end' class='ax'>"
      << html_escape(name) << "</text>";
    o << "<text transform='translate(" << L + i * cell + cell * 0.65 << "," << T - 4 << ") rotate(-60)' class='ax'>"
      << html_escape(name) << "</text>";
    for (int j = 0; j < n; ++j) {
      const double f = total ? static_cast<double>(cm[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)]) / total : 0;
      const int shade = static_cast<int>(255 - 200 * std::sqrt(f));
      o << "<rect x='" << L + j * cell << "' y='" << T + i * cell << "' width='" << cell << "' height='" << cell
        << "' fill='rgb(" << shade << "," << shade << ",255)' stroke='#fff'><title>true " << html_escape(name)
        << " → predicted " << j << ": " << cm[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] << "</title></rect>";
    }
  }
  o << "</svg>";
  return o.str();
}

inline std::string render_report(const ReportData& d) {
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>" << html_escape(d.title)
    << "</title><style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0}"
       "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.ct{font-size:13px;font-weight:bold}"
       ".ax{font-size:10px}.nb img{width:56px;height:56px;image-rendering:pixelated;border:3px solid}"
       ".ok{border-color:#2a2!important}.bad{border-color:#d22!important}.q{border-color:#888!important}"
       ".nb td{vertical-align:top;font-size:11px}</style></head><body>\n";
  o << "<h1>" << html_escape(d.title) << "</h1>\n<h2 id='metrics'>Metrics</h2><table id='metrics-table'>";
  for (const auto& [k, v] : d.metrics) o << "<tr><th>" << html_escape(k) << "</th><td>" << html_escape(v) << "</td></tr>";
  o << "</table>\n<h2 id='curves'>Training</h2><div>" << svg_chart("loss", d.loss_curves, "epoch")
    << svg_chart("learning rate", d.lr_curves, "epoch")
    << (d.acc_curves.empty() ? std::string("<p id='no-validation'>No validation accuracy: this run has no validation "
                                           "split (train with --fold k or --fold all).</p>")
                             : svg_chart("validation accuracy", d.acc_curves, "epoch"))
    << "</div>\n<h2 id='confusion'>Confusion matrix (nearest neighbour)</h2>" << svg_confusion(d.confusion, d.class_names)
    << "\n<h2 id='per-class'>Per-class accuracy</h2><table>";
  for (std::size_t c = 0; c < d.per_class_accuracy.size(); ++c)
    o << "<tr><th>" << html_escape(c < d.class_names.size() ? d.class_names[c] : std::to_string(c)) << "</th><td>"
      << std::fixed << std::setprecision(4) << d.per_class_accuracy[c] << "</td></tr>";
  o << "</table>\n<h2 id='neighbours'>Queries and their top-5 neighbours (worst failures first)</h2><table class='nb'>";
  auto cname = [&](std::int64_t l) {
    return l >= 0 && static_cast<std::size_t>(l) < d.class_names.size() ? d.class_names[static_cast<std::size_t>(l)]
                                                                          : std::to_string(l);
  };
  for (const auto& r : d.neighbours) {
    o << "<tr><td><img class='q' alt='query' src='data:image/png;base64," << r.query_png_b64 << "'><br>"
      << html_escape(cname(r.query_label)) << "<br>→ " << html_escape(cname(r.predicted)) << "</td>";
    for (std::size_t j = 0; j < r.neighbour_png_b64.size(); ++j)
      o << "<td><img class='" << (r.neighbour_labels[j] == r.query_label ? "ok" : "bad")
        << "' alt='neighbour' src='data:image/png;base64," << r.neighbour_png_b64[j] << "'><br>"
        << html_escape(cname(r.neighbour_labels[j])) << "<br>" << std::setprecision(3) << r.neighbour_scores[j] << "</td>";
    o << "</tr>";
  }
  o << "</table>\n<h2 id='config'>Configuration</h2><table>";
  for (const auto& [k, v] : d.config) o << "<tr><th>" << html_escape(k) << "</th><td>" << html_escape(v) << "</td></tr>";
  o << "</table>\n</body></html>\n";
  return o.str();
}

}  // namespace retrieval_app
