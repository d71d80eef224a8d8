#include "train/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/base/error.h"
#include "core/base/escape.h"
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

// About five round tick values across [lo, hi], counted before they are made, so that
// the loop ends whatever the span: one ulp wide (a step that rounds away when added),
// 1e308 wide (a span that overflows), NaN or infinite ends (no ticks then).
std::vector<double> ticks(double lo, double hi) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (!(hi > lo)) return {lo};
  const double raw = (hi / 2 - lo / 2) / 2.5, mag = std::pow(10.0, std::floor(std::log10(raw)));
  if (!(mag > 0) || !std::isfinite(mag)) return {lo, hi};
  const double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
  const double first = std::ceil(lo / step), last = std::floor(hi / step + 1e-9);
  // A span of a few ulps: multiples of the step so far from 0 that k + 1 rounds to k.
  if (!(std::fabs(first) < 1e15 && std::fabs(last) < 1e15 && last - first < 20)) return {lo, hi};
  std::vector<double> out;
  for (int64_t k = int64_t(first); k <= int64_t(last); ++k) out.push_back(k == 0 ? 0.0 : double(k) * step);
  return out;
}

// Where v lies between lo and hi, 0 to 1 (halves first: hi - lo may overflow).
double fraction(double v, double lo, double hi) { return (v / 2 - lo / 2) / (hi / 2 - lo / 2); }

const char* kFont = "font-family=\"sans-serif\" font-size=\"11\"";

}  // namespace

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

std::string line_chart(const std::string& title, const std::string& x_label, const std::vector<Series>& input, YScale y_scale,
                       int width, int height) {
  const double left = 52, right = 12, top = 26, bottom = 40, w = width - left - right, h = height - top - bottom;
  // On a log axis the chart is drawn in log10(y) and labelled in y.
  const bool log_y = y_scale == YScale::Log;
  std::vector<Series> series = input;
  if (log_y)
    for (Series& s : series)
      for (auto& p : s.points) p.second = p.second > 0 ? std::log10(p.second) : std::nan("");
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const Series& s : series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) + "\" height=\"" +
                    std::to_string(height) + "\" " + kFont + ">";
  svg += "<text x=\"" + num(left) + "\" y=\"16\" font-weight=\"bold\">" + html_escape(title) + "</text>";
  if (!std::isfinite(x0)) return svg + "<text x=\"" + num(left) + "\" y=\"" + num(top + h / 2) + "\">no data yet</text></svg>";
  // One value: an axis from it up (down at the top of the range; adding 1 to 1e300
  // changes nothing, so a relative span past that).
  const auto widen = [](double& lo, double& hi, double by) {
    if (hi != lo) return;
    const double d = lo == 0 ? 1 : std::max(by, std::fabs(lo) * 1e-6);
    if (std::isfinite(hi + d)) hi += d;
    else lo -= d;
  };
  widen(x0, x1, 1.0);
  widen(y0, y1, std::fabs(y0) * 0.1);
  const auto px = [&](double x) { return left + fraction(x, x0, x1) * w; };
  const auto py = [&](double y) { return top + h - fraction(y, y0, y1) * h; };
  svg += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
         "\" fill=\"none\" stroke=\"#bbb\"/>";
  for (double t : ticks(y0, y1))
    svg += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + w) + "\" y1=\"" + num(py(t)) + "\" y2=\"" + num(py(t)) +
           "\" stroke=\"#eee\"/><text x=\"" + num(left - 4) + "\" y=\"" + num(py(t) + 4) + "\" text-anchor=\"end\">" +
           num(log_y ? std::pow(10.0, t) : t) + "</text>";
  for (double t : ticks(x0, x1))
    svg += "<text x=\"" + num(px(t)) + "\" y=\"" + num(top + h + 14) + "\" text-anchor=\"middle\">" + num(t, "%.7g") + "</text>";
  svg += "<text x=\"" + num(left + w / 2) + "\" y=\"" + num(height - 6) + "\" text-anchor=\"middle\">" + html_escape(x_label) + "</text>";
  if (log_y) svg += "<text x=\"" + num(left + w) + "\" y=\"16\" text-anchor=\"end\" fill=\"#777\">log scale</text>";
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
      svg += "<text x=\"" + num(legend_x + 14) + "\" y=\"" + num(top + 11) + "\">" + html_escape(s.name) + "</text>";
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
                    html_escape(title) + "</text>";
  if (!std::isfinite(x0)) return svg + "</svg>";
  // The axes in whole decades, as exponents (10^-324 is 0 and 10^309 infinite as doubles),
  // with at most about 12 gridlines an axis.
  const auto decades = [](double lo, double hi, double headroom) {
    const int a = int(std::floor(std::log10(lo))), b = std::max(a + 1, int(std::ceil(std::log10(hi) + headroom)));
    return std::pair<int, int>{a, b};
  };
  const auto [ex0, ex1] = decades(x0, x1, 0.0);
  const auto [ey0, ey1] = decades(y0, y1, 0.3);
  const auto px = [&, ex0 = ex0, ex1 = ex1](double x) { return left + (std::log10(x) - ex0) / (ex1 - ex0) * w; };
  const auto py = [&, ey0 = ey0, ey1 = ey1](double y) { return top + h - (std::log10(y) - ey0) / (ey1 - ey0) * h; };
  const auto power = [](int e) { return num(std::pow(10.0, e)); };
  svg += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
         "\" fill=\"none\" stroke=\"#bbb\"/>";
  for (int e = ex0; e <= ex1; e += std::max(1, (ex1 - ex0) / 12)) {
    const double x = left + double(e - ex0) / (ex1 - ex0) * w;
    svg += "<line x1=\"" + num(x) + "\" x2=\"" + num(x) + "\" y1=\"" + num(top) + "\" y2=\"" + num(top + h) +
           "\" stroke=\"#eee\"/><text x=\"" + num(x) + "\" y=\"" + num(top + h + 14) + "\" text-anchor=\"middle\">" +
           power(e) + "</text>";
  }
  for (int e = ey0; e <= ey1; e += std::max(1, (ey1 - ey0) / 12)) {
    const double y = top + h - double(e - ey0) / (ey1 - ey0) * h;
    svg += "<line x1=\"" + num(left) + "\" x2=\"" + num(left + w) + "\" y1=\"" + num(y) + "\" y2=\"" + num(y) +
           "\" stroke=\"#eee\"/><text x=\"" + num(left - 4) + "\" y=\"" + num(y + 4) + "\" text-anchor=\"end\">" + power(e) +
           "</text>";
  }
  svg += "<text x=\"" + num(left + w / 2) + "\" y=\"" + num(height - 6) + "\" text-anchor=\"middle\">" + html_escape(x_label) + "</text>";
  svg += "<text transform=\"translate(14," + num(top + h / 2) + ") rotate(-90)\" text-anchor=\"middle\">" + html_escape(y_label) + "</text>";
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
           html_escape(s.name) + "</text>";
    legend_y += 14;
  }
  for (const Mark& m : marks) {
    if (!(m.x > 0) || !(m.y > 0)) continue;
    svg += "<circle cx=\"" + num(px(m.x)) + "\" cy=\"" + num(py(m.y)) + "\" r=\"4\" fill=\"" + m.color + "\"><title>" +
           html_escape(m.label) + "</title></circle><text x=\"" + num(px(m.x) + 6) + "\" y=\"" + num(py(m.y) - 5) + "\" font-size=\"9\">" +
           html_escape(m.label) + "</text>";
  }
  return svg + "</svg>";
}

std::string heatmap(const std::vector<std::vector<int64_t>>& counts, const std::vector<std::string>& labels,
                    const std::string& row_title, const std::string& column_title) {
  const int n = int(counts.size()), cell = 44, left = 92, top = 96;
  const int width = left + n * cell + 80, height = top + n * cell + 16;
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) + "\" height=\"" +
                    std::to_string(height) + "\" " + kFont + ">";
  svg += "<text x=\"" + num(left + n * cell / 2.0) + "\" y=\"14\" text-anchor=\"middle\">" + html_escape(column_title) + "</text>";
  svg += "<text transform=\"translate(12," + num(top + n * cell / 2.0) + ") rotate(-90)\" text-anchor=\"middle\">" +
         html_escape(row_title) + "</text>";
  for (int c = 0; c < n; ++c)
    svg += "<text transform=\"translate(" + num(left + c * cell + cell / 2.0 + 4) + "," + num(top - 6) +
           ") rotate(-60)\">" + html_escape(c < int(labels.size()) ? labels[size_t(c)] : std::to_string(c)) + "</text>";
  for (int r = 0; r < n; ++r) {
    int64_t total = 0;
    for (int64_t v : counts[size_t(r)]) total += v;
    svg += "<text x=\"" + num(left - 6) + "\" y=\"" + num(top + r * cell + cell / 2.0 + 4) + "\" text-anchor=\"end\">" +
           html_escape(r < int(labels.size()) ? labels[size_t(r)] : std::to_string(r)) + "</text>";
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
