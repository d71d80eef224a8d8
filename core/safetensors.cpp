#include "core/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>

#include "core/autograd.h"
#include "core/base/file.h"
#include "core/base/escape.h"
#include "core/base/limits.h"

namespace emonext {

namespace {

// A JSON reader for the safetensors header: objects, arrays, strings, integers.
struct Json {
  enum Kind { Null, Number, String, Array, Object } kind = Null;
  int64_t number = 0;
  std::string text;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> fields;
  const Json* get(const std::string& key) const {
    for (const auto& [k, v] : fields)
      if (k == key) return &v;
    return nullptr;
  }
};

class JsonParser {
 public:
  JsonParser(const std::string& s, const std::string& file) : s_(s), file_(file) {}
  Json parse() {
    Json v = value();
    skip();
    if (i_ != s_.size()) error("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void error(const char* what) {
    fail(detail::concat(file_, ": corrupt safetensors header (", what, " at byte ", i_, ")"));
  }
  void skip() { while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_; }
  char peek() { skip(); if (i_ >= s_.size()) error("unexpected end"); return s_[i_]; }
  void expect(char c) { if (peek() != c) error("unexpected character"); ++i_; }
  // Recursive descent, so the nesting is bounded (100,000 '[' would overflow the stack).
  Json value() {
    if (++depth_ > limits::kMaxNesting) error("nesting deeper than 64");
    Json v = value_here();
    --depth_;
    return v;
  }
  Json value_here() {
    const char c = peek();
    Json v;
    if (c == '{') {
      v.kind = Json::Object;
      ++i_;
      if (peek() == '}') { ++i_; return v; }
      for (;;) {
        std::string key = string();
        expect(':');
        v.fields.emplace_back(std::move(key), value());
        if (peek() == ',') { ++i_; continue; }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Json::Array;
      ++i_;
      if (peek() == ']') { ++i_; return v; }
      for (;;) {
        v.items.push_back(value());
        if (peek() == ',') { ++i_; continue; }
        expect(']');
        return v;
      }
    }
    if (c == '"') { v.kind = Json::String; v.text = string(); return v; }
    if (c == '-' || std::isdigit(static_cast<unsigned char>(c))) {  // integers only: shapes and offsets
      size_t end = i_ + 1;
      while (end < s_.size() && std::isdigit(static_cast<unsigned char>(s_[end]))) ++end;
      v.kind = Json::Number;
      const auto r = std::from_chars(s_.data() + i_, s_.data() + end, v.number);
      if (r.ec != std::errc() || r.ptr != s_.data() + end) error("a number that is not a 64-bit integer");
      i_ = end;
      return v;
    }
    if (s_.compare(i_, 4, "null") == 0) { i_ += 4; return v; }
    error("unexpected value");
  }
  std::string string() {
    expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (s_[i_] == '\\') {
        if (++i_ >= s_.size()) break;
        const char e = s_[i_];
        if (e == 'u') {
          append_utf8(out, code_point());
          continue;
        }
        out += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : e;  // and \" \\ \/
      } else {
        out += s_[i_];
      }
      ++i_;
    }
    if (i_ >= s_.size()) error("unterminated string");
    ++i_;
    return out;
  }
  // After "\u" (s_[i_] is the 'u'): four hex digits, and a second \uXXXX when they are a
  // high surrogate; leaves i_ after the last digit.
  uint32_t code_point() {
    const auto hex4 = [&]() {
      if (i_ + 4 >= s_.size()) error("truncated \\u escape");
      uint32_t v = 0;
      for (int k = 1; k <= 4; ++k) {
        const char h = s_[i_ + size_t(k)];
        if (!std::isxdigit(static_cast<unsigned char>(h))) error("bad \\u escape");
        v = v * 16 + uint32_t(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : std::tolower(h) - 'a' + 10);
      }
      i_ += 5;
      return v;
    };
    const uint32_t hi = hex4();
    if (hi < 0xD800 || hi > 0xDBFF) return hi;
    if (s_.compare(i_, 2, "\\u") != 0) error("lone surrogate in \\u escape");
    ++i_;
    const uint32_t lo = hex4();
    if (lo < 0xDC00 || lo > 0xDFFF) error("bad surrogate pair in \\u escape");
    return 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
  }
  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }
  const std::string& s_;
  const std::string& file_;
  size_t i_ = 0;
  int depth_ = 0;
};

const char* st_dtype(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
  }
  return "?";
}

DType parse_st_dtype(const std::string& s, const std::string& file, const std::string& name) {
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I64, DType::U8})
    if (s == st_dtype(t)) return t;
  if (s == "BOOL") return DType::U8;
  fail(detail::concat(file, ": tensor '", name, "' has dtype ", s, ", which emonext does not read (F32, F64, BF16, F16, I64, U8, BOOL)"));
}

// The header's length from the first 8 bytes of a file of `file_size` bytes.
uint64_t header_length(const unsigned char* len_bytes, uint64_t file_size, const std::string& path) {
  EMONEXT_CHECK(file_size >= 8, path, ": truncated safetensors file (", file_size, " bytes)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  EMONEXT_CHECK(header_len <= file_size - 8, path, ": header length ", header_len, " exceeds the file (", file_size,
                " bytes): truncated or not a safetensors file");
  return header_len;
}

std::map<std::string, std::string> metadata_of(const Json& root) {
  std::map<std::string, std::string> out;
  if (const Json* m = root.get("__metadata__"))
    for (const auto& [k, v] : m->fields) out[k] = v.text;
  return out;
}

}  // namespace

const Tensor& SafeTensors::at(const std::string& name) const {
  for (const auto& [k, t] : tensors)
    if (k == name) return t;
  std::string names;
  for (size_t i = 0; i < tensors.size() && i < 8; ++i) names += (i ? ", " : "") + tensors[i].first;
  fail(detail::concat("safetensors: no tensor '", name, "' (the file has ", tensors.size(), ": ", names,
                      tensors.size() > 8 ? ", ..." : "", ")"));
}

bool SafeTensors::contains(const std::string& name) const {
  for (const auto& kv : tensors)
    if (kv.first == name) return true;
  return false;
}

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  const uint64_t file_size = regular_file_size(path);
  std::ifstream in(path, std::ios::binary);
  EMONEXT_CHECK(in, path, ": cannot open for reading");
  unsigned char len_bytes[8] = {};
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  std::string header(header_length(len_bytes, file_size, path), '\0');
  in.read(header.data(), std::streamsize(header.size()));
  EMONEXT_CHECK(in, path, ": read error");
  const Json root = JsonParser(header, path).parse();
  EMONEXT_CHECK(root.kind == Json::Object, path, ": header is not a JSON object");
  return metadata_of(root);
}

SafeTensors load_safetensors(const std::string& path) {
  const std::vector<char> bytes = read_file(path);
  return parse_safetensors(bytes.data(), bytes.size(), path);
}

SafeTensors parse_safetensors(const char* bytes, size_t n, const std::string& path) {
  const uint64_t header_len = header_length(reinterpret_cast<const unsigned char*>(bytes), n, path);
  const std::string header(bytes + 8, header_len);
  const char* data = bytes + 8 + header_len;
  const uint64_t data_size = n - 8 - header_len;

  const Json root = JsonParser(header, path).parse();
  EMONEXT_CHECK(root.kind == Json::Object, path, ": header is not a JSON object");
  struct Entry {
    const std::string* name;
    DType dtype;
    Shape shape;
    int64_t begin, end;
  };
  std::vector<Entry> entries;  // in the header's order, which the result keeps
  std::set<std::string> names;
  for (const auto& [name, entry] : root.fields) {
    if (name == "__metadata__") continue;
    EMONEXT_CHECK(names.insert(name).second, path, ": tensor '", name, "' appears twice in the header");
    const Json* dtype = entry.get("dtype");
    const Json* shape = entry.get("shape");
    const Json* offsets = entry.get("data_offsets");
    EMONEXT_CHECK(dtype && shape && offsets && offsets->items.size() == 2, path, ": tensor '", name,
                  "' lacks dtype, shape or data_offsets");
    const DType t = parse_st_dtype(dtype->text, path, name);
    EMONEXT_CHECK(shape->kind == Json::Array && offsets->kind == Json::Array, path, ": tensor '", name,
                  "': shape and data_offsets must be arrays");
    Shape s;
    for (const Json& d : shape->items) {
      EMONEXT_CHECK(d.kind == Json::Number, path, ": tensor '", name, "': a shape entry that is not a number");
      s.push_back(d.number);
    }
    const int64_t begin = offsets->items[0].number, end = offsets->items[1].number;
    const int64_t expect = limits::mul(limits::numel(s, path, ": tensor '", name, "'"), int64_t(dtype_size(t)), path, ": tensor '", name, "'");
    EMONEXT_CHECK(begin >= 0 && end >= begin && uint64_t(end) <= data_size, path, ": tensor '", name, "' data [", begin,
                  ", ", end, ") lies outside the ", data_size, " data bytes (truncated file?)");
    EMONEXT_CHECK(end - begin == expect, path, ": tensor '", name, "' has ", end - begin, " bytes, but ", dtype->text,
                  shape_str(s), " needs ", expect);
    entries.push_back({&name, t, std::move(s), begin, end});
  }
  // As the reference library (safetensors' Metadata::validate): the tensors' bytes tile the
  // data section in the order of their offsets, with no gap and no overlap. Tensors that
  // shared bytes would each be copied out (2,000 entries over one 4 MiB block asked for
  // 8 GiB); so the tensors hold exactly the data's bytes, and no more is allocated.
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return std::tie(a->begin, a->end) < std::tie(b->begin, b->end); });
  int64_t at = 0;
  for (const Entry* e : by_offset) {
    EMONEXT_CHECK(e->begin == at, path, ": tensor '", *e->name, "' data [", e->begin, ", ", e->end, ") ",
                  e->begin < at ? "overlaps another tensor's" : "leaves a gap after the tensor before it",
                  " (the data section holds each tensor's bytes once, in order)");
    at = e->end;
  }
  EMONEXT_CHECK(uint64_t(at) == data_size, path, ": the tensors hold ", at, " of the ", data_size,
                " data bytes (the data section holds each tensor's bytes once, in order)");
  SafeTensors out;
  out.metadata = metadata_of(root);
  for (const Entry& e : entries) out.tensors.emplace_back(*e.name, Tensor::from_bytes(data + e.begin, e.shape, e.dtype));
  return out;
}

FileWriter safetensors_writer(const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  NoGradGuard no_grad;
  std::vector<Tensor> host;
  std::ostringstream header;
  header << '{';
  bool first = true;
  if (!metadata.empty()) {
    header << "\"__metadata__\":{";
    for (auto it = metadata.begin(); it != metadata.end(); ++it)
      header << (it == metadata.begin() ? "" : ",") << '"' << json_escape(it->first) << "\":\"" << json_escape(it->second) << '"';
    header << '}';
    first = false;
  }
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    host.push_back(t.to(Device::cpu()).contiguous());
    const int64_t bytes = t.numel() * int64_t(dtype_size(t.dtype()));
    header << (first ? "" : ",") << '"' << json_escape(name) << "\":{\"dtype\":\"" << st_dtype(t.dtype()) << "\",\"shape\":[";
    for (size_t i = 0; i < t.shape().size(); ++i) header << (i ? "," : "") << t.shape()[i];
    header << "],\"data_offsets\":[" << offset << ',' << offset + bytes << "]}";
    offset += bytes;
    first = false;
  }
  header << '}';
  std::string h = header.str();
  while ((8 + h.size()) % 8 != 0) h += ' ';  // the format pads the header to 8 bytes with spaces
  return [h = std::move(h), host = std::move(host)](std::ostream& out) {
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(uint64_t(h.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(h.data(), std::streamsize(h.size()));
    for (const Tensor& t : host) out.write(static_cast<const char*>(t.data_ptr()), std::streamsize(t.numel() * int64_t(dtype_size(t.dtype()))));
  };
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomically(path, safetensors_writer(tensors, metadata));
}

}  // namespace emonext
