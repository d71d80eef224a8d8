// Text from files, folder names and the command line, put into the formats the tools
// write: one helper per format, used by every writer of it.
#pragma once
#include <cstdio>
#include <string>

namespace emonext {

// The inside of a JSON string literal: quotes and backslashes escaped, control characters
// as \u00XX (safetensors headers, config.json, emonext_predict --json).
inline std::string json_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// One CSV field (RFC 4180): as it is, or in double quotes (inner quotes doubled) when it
// holds a comma, a quote or a line break.
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// Text or an attribute value in HTML and inline SVG: & < > " ' as references, and the
// control characters that neither allows (all below 0x20 but tab, line feed and carriage
// return) as U+FFFD.
inline std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') out += "\xEF\xBF\xBD";
        else out += c;
    }
  }
  return out;
}

}  // namespace emonext
