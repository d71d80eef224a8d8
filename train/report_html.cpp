#include "train/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/base/error.h"
#include "core/base/file.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include <stb/stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace emonext::html {

namespace {

std::string num(double v, const char* f = "%.4g") {
  char b[40];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// About five round tick values across [lo, hi].
std::vector<double> ticks(double lo, double hi) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
  std::vector<double> out;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push_back(std::fabs(t) < step * 1e-9 ? 0 : t);
  return out;
}

const char* kFont = "font-family=\"sans-serif\" font-size=\"11\"";

}  // namespace

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

std::string png(const uint8_t* pixels, int width, int height, int channels) {
  int n = 0;
  unsigned char* mem = stbi_write_png_to_mem(pixels, width * channels, width, height, channels, &n);
  EMONEXT_CHECK(mem != nullptr, "png: cannot encode a ", width, " x ", height, " image");
  std::string out(reinterpret_cast<char*>(mem), size_t(n));
  STBIW_FREE(mem);
  return out;
}

std::string jpeg(const uint8_t* pixels, int width, int height, int channels) {
  std::string out;
  const int ok = stbi_write_jpg_to_func(
      [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size_t(size)); }, &out,
      width, height, channels, pixels, 90);
  EMONEXT_CHECK(ok, "jpeg: cannot encode a ", width, " x ", height, " image");
  return out;
}

std::string data_uri(const std::string& png_bytes) {
  static const char* kDigits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out = "data:image/png;base64,";
  size_t i = 0;
  for (; i + 2 < png_bytes.size(); i += 3) {
    const uint32_t v = (uint32_t(uint8_t(png_bytes[i])) << 16) | (uint32_t(uint8_t(png_bytes[i + 1])) << 8) | uint8_t(png_bytes[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += kDigits[(v >> k) & 63];
  }
  if (i < png_bytes.size()) {
    const uint32_t v = (uint32_t(uint8_t(png_bytes[i])) << 16) | (i + 1 < png_bytes.size() ? uint32_t(uint8_t(png_bytes[i + 1])) << 8 : 0);
    out += kDigits[(v >> 18) & 63];
    out += kDigits[(v >> 12) & 63];
    out += i + 1 < png_bytes.size() ? kDigits[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string line_chart(const std::string& title, const std::string& x_label, const std::vector<Series>& series, int width,
                       int height) {
  const double left = 52, right = 12, top = 26, bottom = 40, w = width - left - right, h = height - top - bottom;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const Series& s : series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) + "\" height=\"" +
                    std::to_string(height) + "\" " + kFont + ">";
  svg += "<text x=\"" + num(left) + "\" y=\"16\" font-weight=\"bold\">" + escape(title) + "</text>";
  if (!std::isfinite(x0)) return svg + "<text x=\"" + num(left) + "\" y=\"" + num(top + h / 2) + "\">no data yet</text></svg>";
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + (y0 == 0 ? 1 : std::fabs(y0) * 0.1);
  const auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * w; };
  const auto py = [&](double y) { return top + h - (y - y0) / (y1 - y0) * h; };
  svg += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
         "\" fill=\"none\" stroke=\"#bbb\"/>";
  for (double t : ticks(y0, y1))
    svg += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + w) + "\" y1=\"" + num(py(t)) + "\" y2=\"" + num(py(t)) +
           "\" stroke=\"#eee\"/><text x=\"" + num(left - 4) + "\" y=\"" + num(py(t) + 4) + "\" text-anchor=\"end\">" + num(t) +
           "</text>";
  for (double t : ticks(x0, x1))
    svg += "<text x=\"" + num(px(t)) + "\" y=\"" + num(top + h + 14) + "\" text-anchor=\"middle\">" + num(t, "%.7g") + "</text>";
  svg += "<text x=\"" + num(left + w / 2) + "\" y=\"" + num(height - 6) + "\" text-anchor=\"middle\">" + escape(x_label) + "</text>";
  double legend_x = left + 8;
  for (const Series& s : series) {
    std::string points;
    for (const auto& [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) points += num(px(x), "%.1f") + "," + num(py(y), "%.1f") + " ";
    svg += "<polyline fill=\"none\" stroke=\"" + s.color + "\" stroke-width=\"" + (s.thin ? "1\" opacity=\"0.35" : "1.6") +
           "\" points=\"" + points + "\"/>";
    if (s.points.size() == 1)
      svg += "<circle cx=\"" + num(px(s.points[0].first)) + "\" cy=\"" + num(py(s.points[0].second)) + "\" r=\"3\" fill=\"" + s.color + "\"/>";
    if (!s.name.empty()) {
      svg += "<rect x=\"" + num(legend_x) + "\" y=\"" + num(top + 6) + "\" width=\"10\" height=\"3\" fill=\"" + s.color + "\"/>";
      svg += "<text x=\"" + num(legend_x + 14) + "\" y=\"" + num(top + 11) + "\">" + escape(s.name) + "</text>";
      legend_x += 24 + 6.5 * double(s.name.size());
    }
  }
  return svg + "</svg>";
}

std::string loglog_chart(const std::string& title, const std::string& x_label, const std::string& y_label,
                         const std::vector<Series>& lines, const std::vector<Mark>& marks, int width, int height) {
  const double left = 64, right = 16, top = 28, bottom = 44, w = width - left - right, h = height - top - bottom;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  const auto widen = [&](double x, double y) {
    if (!(x > 0) || !(y > 0) || !std::isfinite(x) || !std::isfinite(y)) return;
    x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
  };
  for (const Mark& m : marks) widen(m.x, m.y);
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) + "\" height=\"" +
                    std::to_string(height) + "\" " + kFont + "><text x=\"" + num(left) + "\" y=\"16\" font-weight=\"bold\">" +
                    escape(title) + "</text>";
  if (!std::isfinite(x0)) return svg + "</svg>";
  x0 = std::pow(10, std::floor(std::log10(x0))), x1 = std::pow(10, std::ceil(std::log10(x1)));
  y0 = std::pow(10, std::floor(std::log10(y0))), y1 = std::pow(10, std::ceil(std::log10(y1) + 0.3));
  if (x1 <= x0) x1 = x0 * 10;
  if (y1 <= y0) y1 = y0 * 10;
  const auto px = [&](double x) { return left + std::log10(x / x0) / std::log10(x1 / x0) * w; };
  const auto py = [&](double y) { return top + h - std::log10(y / y0) / std::log10(y1 / y0) * h; };
  svg += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
         "\" fill=\"none\" stroke=\"#bbb\"/>";
  for (double t = x0; t <= x1 * 1.0001; t *= 10)
    svg += "<line x1=\"" + num(px(t)) + "\" x2=\"" + num(px(t)) + "\" y1=\"" + num(top) + "\" y2=\"" + num(top + h) +
           "\" stroke=\"#eee\"/><text x=\"" + num(px(t)) + "\" y=\"" + num(top + h + 14) + "\" text-anchor=\"middle\">" +
           num(t) + "</text>";
  for (double t = y0; t <= y1 * 1.0001; t *= 10)
    svg += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + w) + "\" y1=\"" + num(py(t)) + "\" y2=\"" + num(py(t)) +
           "\" stroke=\"#eee\"/><text x=\"" + num(left - 4) + "\" y=\"" + num(py(t) + 4) + "\" text-anchor=\"end\">" + num(t) +
           "</text>";
  svg += "<text x=\"" + num(left + w / 2) + "\" y=\"" + num(height - 6) + "\" text-anchor=\"middle\">" + escape(x_label) + "</text>";
  svg += "<text transform=\"translate(14," + num(top + h / 2) + ") rotate(-90)\" text-anchor=\"middle\">" + escape(y_label) + "</text>";
  svg += "<clipPath id=\"plot\"><rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
         "\"/></clipPath>";
  double legend_y = top + 14;
  for (const Series& s : lines) {
    std::string points;
    for (const auto& [x, y] : s.points)
      if (x > 0 && y > 0) points += num(px(x), "%.1f") + "," + num(py(y), "%.1f") + " ";
    svg += "<polyline clip-path=\"url(#plot)\" fill=\"none\" stroke=\"" + s.color + "\" stroke-width=\"1.5\"" +
           (s.thin ? " stroke-dasharray=\"5,3\"" : "") + " points=\"" + points + "\"/>";
    svg += "<text x=\"" + num(left + w - 6) + "\" y=\"" + num(legend_y) + "\" text-anchor=\"end\" fill=\"" + s.color + "\">" +
           escape(s.name) + "</text>";
    legend_y += 14;
  }
  for (const Mark& m : marks) {
    if (!(m.x > 0) || !(m.y > 0)) continue;
    svg += "<circle cx=\"" + num(px(m.x)) + "\" cy=\"" + num(py(m.y)) + "\" r=\"4\" fill=\"" + m.color + "\"><title>" +
           escape(m.label) + "</title></circle><text x=\"" + num(px(m.x) + 6) + "\" y=\"" + num(py(m.y) - 5) + "\" font-size=\"9\">" +
           escape(m.label) + "</text>";
  }
  return svg + "</svg>";
}

std::string heatmap(const std::vector<std::vector<int64_t>>& counts, const std::vector<std::string>& labels,
                    const std::string& row_title, const std::string& column_title) {
  const int n = int(counts.size()), cell = 44, left = 92, top = 96;
  const int width = left + n * cell + 80, height = top + n * cell + 16;
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) + "\" height=\"" +
                    std::to_string(height) + "\" " + kFont + ">";
  svg += "<text x=\"" + num(left + n * cell / 2.0) + "\" y=\"14\" text-anchor=\"middle\">" + escape(column_title) + "</text>";
  svg += "<text transform=\"translate(12," + num(top + n * cell / 2.0) + ") rotate(-90)\" text-anchor=\"middle\">" +
         escape(row_title) + "</text>";
  for (int c = 0; c < n; ++c)
    svg += "<text transform=\"translate(" + num(left + c * cell + cell / 2.0 + 4) + "," + num(top - 6) +
           ") rotate(-60)\">" + escape(c < int(labels.size()) ? labels[size_t(c)] : std::to_string(c)) + "</text>";
  for (int r = 0; r < n; ++r) {
    int64_t total = 0;
    for (int64_t v : counts[size_t(r)]) total += v;
    svg += "<text x=\"" + num(left - 6) + "\" y=\"" + num(top + r * cell + cell / 2.0 + 4) + "\" text-anchor=\"end\">" +
           escape(r < int(labels.size()) ? labels[size_t(r)] : std::to_string(r)) + "</text>";
    for (int c = 0; c < n && c < int(counts[size_t(r)].size()); ++c) {
      const double share = total ? double(counts[size_t(r)][size_t(c)]) / double(total) : 0.0;
      const int shade = int(std::lround(255 * (1 - share)));
      const std::string fill = "rgb(" + std::to_string(shade) + "," + std::to_string(std::min(255, shade + 30)) + ",255)";
      svg += "<rect x=\"" + num(left + c * cell) + "\" y=\"" + num(top + r * cell) + "\" width=\"" + num(cell) + "\" height=\"" +
             num(cell) + "\" fill=\"" + fill + "\" stroke=\"#fff\"/><text x=\"" + num(left + c * cell + cell / 2.0) + "\" y=\"" +
             num(top + r * cell + cell / 2.0 + 4) + "\" text-anchor=\"middle\" fill=\"" + (share > 0.55 ? "#fff" : "#000") + "\">" +
             std::to_string(counts[size_t(r)][size_t(c)]) + "</text>";
    }
    svg += "<text x=\"" + num(left + n * cell + 6) + "\" y=\"" + num(top + r * cell + cell / 2.0 + 4) + "\">" +
           (total ? num(100.0 * double(counts[size_t(r)][size_t(r)]) / double(total), "%.1f") + "%" : std::string("-")) + "</text>";
  }
  return svg + "</svg>";
}

void write_atomically(const std::string& path, const std::string& content) {
  write_file_atomically(path, [&](std::ostream& out) { out.write(content.data(), std::streamsize(content.size())); });
}

}  // namespace emonext::html
