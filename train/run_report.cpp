#include "train/run_report.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/base/limits.h"
#include "models/checkpoint.h"
#include "train/explain.h"
#include "train/image.h"
#include "train/report_html.h"

namespace emonext {

namespace {

// The rows of one of the run's CSV files as numbers (header skipped); a row that does
// not parse ends the list (a file being appended to by another writer).
std::vector<std::vector<double>> read_csv(const std::string& path, size_t columns) {
  std::vector<std::vector<double>> rows;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::vector<double> row;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) {
      try {
        row.push_back(limits::parse_real(cell, path));
      } catch (const Error&) {
        row.push_back(std::nan(""));  // "-nan" in steps.csv for a skipped f16 step
      }
    }
    if (row.size() != columns) break;
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string percent(double share) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100 * share);
  return b;
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

std::string json_rows(const std::vector<std::vector<double>>& rows) {
  std::string out = "[";
  for (size_t r = 0; r < rows.size(); ++r) {
    out += r ? ",\n[" : "\n[";
    for (size_t k = 0; k < rows[r].size(); ++k) out.append(k ? "," : "").append(json_number(rows[r][k]));
    out += "]";
  }
  return out + "]";
}

// At most `most` points: the means of equal runs of steps.
std::vector<std::pair<double, double>> thin_out(const std::vector<std::vector<double>>& rows, size_t x, size_t y, size_t most = 1500) {
  std::vector<std::pair<double, double>> out;
  const size_t run = std::max<size_t>(1, (rows.size() + most - 1) / most);
  for (size_t i = 0; i < rows.size(); i += run) {
    double sx = 0, sy = 0;
    size_t n = 0;
    for (size_t k = i; k < std::min(rows.size(), i + run); ++k)
      if (std::isfinite(rows[k][y])) sx += rows[k][x], sy += rows[k][y], ++n;
    if (n) out.emplace_back(sx / double(n), sy / double(n));
  }
  return out;
}

// An exponential moving average, bias-corrected, over the points.
std::vector<std::pair<double, double>> smoothed(const std::vector<std::pair<double, double>>& pts, double keep = 0.95) {
  std::vector<std::pair<double, double>> out;
  double avg = 0, weight = 0;
  for (const auto& [x, y] : pts) {
    avg = keep * avg + (1 - keep) * y;
    weight = keep * weight + (1 - keep);
    out.emplace_back(x, avg / weight);
  }
  return out;
}

html::Series column(const std::vector<std::vector<double>>& rows, size_t x, size_t y, const std::string& name, const std::string& color) {
  html::Series s{name, color, {}};
  for (const auto& r : rows) s.points.emplace_back(r[x], r[y]);
  return s;
}

}  // namespace

RunReport::RunReport(const TrainConfig& c, std::string device, const Dataset& val) : c_(c), device_(std::move(device)), val_(val) {
  for (int64_t label = 0; label < c.classes && label < 7; ++label) {
    std::vector<size_t> of;
    for (size_t i = 0; i < val.samples.size(); ++i)
      if (val.samples[i].label == label) of.push_back(i);
    SampleRng rng(c.seed, 0x7e907ULL, uint64_t(label));  // the same faces every epoch and on resume
    for (int k = 0; k < 2 && !of.empty(); ++k) {
      const size_t pick = size_t(rng.uniform() * double(of.size())) % of.size();
      faces_.push_back(of[pick]);
      of.erase(of.begin() + std::ptrdiff_t(pick));
    }
  }
}

void RunReport::write(EmoNeXt& model, Device device, const Evaluation* confusion, const std::string& confusion_title) const {
  const std::vector<std::vector<double>> epochs = read_csv(c_.out + "/metrics.csv", 9), steps = read_csv(c_.out + "/steps.csv", 4);
  // metrics.csv: epoch,step,train_loss,train_accuracy,val_loss,val_accuracy,lr,images_per_s,data_wait_s
  // steps.csv: step,loss,lr,grad_norm
  std::vector<GrayImage> views;
  std::vector<size_t> shown;
  for (size_t i : faces_) {
    try {
      views.push_back(eval_view(val_.image(i), c_.image_size));
      shown.push_back(i);
    } catch (const Error&) {  // an unreadable image: validation has said so already
    }
  }
  const std::vector<Explanation> ex = explain(model, views, device);
  const std::vector<std::string>& labels = fer2013_labels();
  const auto label_of = [&](int64_t k) { return k >= 0 && k < int64_t(labels.size()) ? labels[size_t(k)] : std::to_string(k); };

  std::string page = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>EmoNeXt run " + html_escape(c_.out) +
                     "</title>\n<style>body{font-family:sans-serif;margin:20px;color:#222}h2{margin-top:28px}"
                     ".charts svg{margin:4px 10px 4px 0}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
                     "text-align:left;font-size:13px}.face{display:inline-block;margin:6px 14px 10px 0;vertical-align:top;font-size:12px}"
                     ".face{width:300px}.face img{width:96px;height:96px;image-rendering:pixelated;margin-right:2px}</style></head><body>\n";
  const double last_epoch = epochs.empty() ? -1 : epochs.back()[0], last_step = steps.empty() ? 0 : steps.back()[0];
  page += "<h1>EmoNeXt-" + html_escape(c_.model) + " at " + std::to_string(c_.image_size) + " x " + std::to_string(c_.image_size) + "</h1>\n";
  page += "<p>" + html_escape(c_.out) + ": " + (epochs.empty() ? std::string("no epoch finished yet") :
          "epoch " + std::to_string(int64_t(last_epoch) + 1) + " of " + std::to_string(c_.epochs)) + ", step " +
          std::to_string(int64_t(last_step)) + (epochs.empty() ? "" : ", validation accuracy " + percent(epochs.back()[5])) +
          "; device " + html_escape(device_) + ".</p>\n";

  page += "<h2>Curves</h2><div class=\"charts\">\n";
  page += html::line_chart("Loss per epoch", "epoch", {column(epochs, 0, 2, "train", "#1f77b4"), column(epochs, 0, 4, "validation", "#d62728")});
  page += html::line_chart("Accuracy per epoch", "epoch", {column(epochs, 0, 3, "train", "#1f77b4"), column(epochs, 0, 5, "validation", "#d62728")});
  const auto step_loss = thin_out(steps, 0, 1);
  page += html::line_chart("Loss per step", "step", {{"", "#1f77b4", step_loss, true}, {"smoothed", "#1f77b4", smoothed(step_loss)}});
  page += html::line_chart("Learning rate", "step", {{"", "#2ca02c", thin_out(steps, 0, 2)}});
  const auto norm = thin_out(steps, 0, 3);
  // On a log axis: the first steps' norms (thousands at a fresh init) would flatten the rest.
  page += html::line_chart("Gradient norm (before clipping)", "step", {{"", "#9467bd", norm, true}, {"smoothed", "#9467bd", smoothed(norm)}},
                           html::YScale::Log);
  page += html::line_chart("Training images/s", "epoch", {column(epochs, 0, 7, "", "#ff7f0e")});
  page += "</div>\n";

  page += "<h2>Confusion matrix: " + html_escape(confusion_title) + "</h2>\n";
  page += confusion ? html::heatmap(confusion->confusion, labels, "true emotion", "predicted emotion (the right column: accuracy)")
                    : std::string("<p>none yet</p>");

  page += "\n<h2>Validation faces</h2><p>Each: the input, what the spatial transformer makes of it (the image the backbone "
          "sees), and Grad-CAM of stage " + std::to_string(ex.empty() ? 0 : ex[0].cam_stage + 1) +
          " for the predicted emotion over it (red: what raised that logit most). The faces are the same every epoch.</p>\n";
  std::string faces_json;
  for (size_t k = 0; k < ex.size(); ++k) {
    const Explanation& e = ex[k];
    const int64_t truth = val_.samples[shown[k]].label;
    page += "<div class=\"face\"><img alt=\"input\" src=\"" + html::data_uri(gray_png(e.view)) + "\"><img alt=\"transformed\" src=\"" +
            html::data_uri(gray_png(e.transformed)) + "\"><img alt=\"grad-cam\" src=\"" + html::data_uri(cam_png(e.transformed, e.cam)) +
            "\"><br>true <b>" + html_escape(label_of(truth)) + "</b>, predicted <b" +
            (e.predicted == truth ? "" : " style=\"color:#c00\"") + ">" + html_escape(label_of(e.predicted)) + "</b><br>";
    faces_json += std::string(k ? ",\n" : "\n") + "{\"index\":" + std::to_string(shown[k]) + ",\"label\":" + std::to_string(truth) +
                  ",\"predicted\":" + std::to_string(e.predicted) + ",\"probabilities\":[";
    for (size_t c = 0; c < e.probabilities.size(); ++c) {
      page.append(c ? " " : "").append(html_escape(label_of(int64_t(c)))).append(" ");
      page.append(percent(e.probabilities[c]));
      faces_json.append(c ? "," : "").append(json_number(e.probabilities[c]));
    }
    faces_json += "]}";
    page += "</div>\n";
  }

  page += "<h2>Settings</h2><table><tr><th>setting</th><th>value</th></tr>\n<tr><td>device</td><td>" + html_escape(device_) +
          "</td></tr><tr><td>engine</td><td>emonext-engine 0.1.0</td></tr>\n";
  for (const auto& [key, value] : setting_metadata(c_))
    page += "<tr><td>" + html_escape(key.substr(8)) + "</td><td>" + html_escape(value) + "</td></tr>\n";
  page += "</table>\n";

  std::string confusion_json = "null";
  if (confusion) {
    confusion_json = "[";
    for (size_t r = 0; r < confusion->confusion.size(); ++r) {
      confusion_json += r ? ",[" : "[";
      for (size_t c = 0; c < confusion->confusion[r].size(); ++c)
        confusion_json.append(c ? "," : "").append(std::to_string(confusion->confusion[r][c]));
      confusion_json += "]";
    }
    confusion_json += "]";
  }
  page += "<script type=\"application/json\" id=\"emonext-data\">\n{\"metrics\":" + json_rows(epochs) + ",\n\"steps\":" + json_rows(steps) +
          ",\n\"confusion\":" + confusion_json + ",\n\"faces\":[" + faces_json + "]}\n</script>\n</body></html>\n";
  html::write_atomically(c_.out + "/report.html", page);
}

}  // namespace emonext
