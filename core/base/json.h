// A string as the inside of a JSON string literal: quotes and backslashes escaped,
// control characters as \u00XX. For the few JSON texts the engine writes by hand
// (safetensors headers, config.json, emonext_predict --json).
#pragma once
#include <cstdio>
#include <string>

namespace emonext {

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

}  // namespace emonext
