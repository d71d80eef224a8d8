// The pieces the engine's HTML pages are made of, with no library beyond stb_image_write:
// PNG images (written by stb_image_write, embedded as base64 data URIs), and
// charts as inline SVG (lines over x, points and lines on log-log axes, a heat map). A
// page written with them opens offline in any browser: nothing is fetched, no script runs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/base/escape.h"  // html_escape: text from files and the command line in a page

namespace emonext::html {

// A PNG file of 8-bit pixels (1 gray or 3 RGB channels, rows top first), and the same as
// a data URI for an <img>.
std::string png(const uint8_t* pixels, int width, int height, int channels);
std::string data_uri(const std::string& png_bytes);
// A baseline JPEG of the same pixels (quality 90): the tests' and the fuzzer's seeds.
std::string jpeg(const uint8_t* pixels, int width, int height, int channels);

struct Series {
  std::string name, color;
  std::vector<std::pair<double, double>> points;  // (x, y), x increasing
  bool thin = false;                              // a faint line under a smoothed one
};
enum class YScale { Linear, Log };
// A line chart of the series over a shared x axis, with ticks and a legend. On a log
// y axis (for values spanning decades: a gradient norm) points at or below 0 are left out.
std::string line_chart(const std::string& title, const std::string& x_label, const std::vector<Series>& series,
                       YScale y_scale = YScale::Linear, int width = 460, int height = 230);

struct Mark {  // a labelled point of a log-log chart
  double x, y;
  std::string label, color;
};
// Points and lines (each line a Series) on log-log axes: a roofline.
std::string loglog_chart(const std::string& title, const std::string& x_label, const std::string& y_label,
                         const std::vector<Series>& lines, const std::vector<Mark>& marks, int width = 720, int height = 420);

// A square matrix of counts as a heat map (each row's colour by its share of the row),
// the counts written in the cells, rows and columns labelled.
std::string heatmap(const std::vector<std::vector<int64_t>>& counts, const std::vector<std::string>& labels,
                    const std::string& row_title, const std::string& column_title);

// Writes `content` to path.tmp and renames it over path: a reader (a browser reloading
// the page) sees the previous file or the new one, never half of one; a failed write
// leaves the previous file and no .tmp.
void write_atomically(const std::string& path, const std::string& content);

}  // namespace emonext::html
