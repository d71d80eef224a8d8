// torch.save files made by hand, byte by byte: a stored zip archive and the protocol-2
// pickle torch.save writes, with every field a hostile file can lie about given (the
// readers' tests and the fuzzer's generated inputs).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace emonext::test {

// v as n little-endian bytes.
inline std::string le(uint64_t v, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += char((v >> (8 * i)) & 0xFF);
  return out;
}

// ---- a stored zip ---------------------------------------------------------------------------
struct ZipEntry {
  std::string name, data;
  uint64_t size_override = 0;  // when not 0: the central directory's size, as a zip64 value
};

inline std::string zip(const std::vector<ZipEntry>& entries) {
  std::string out, central;
  for (const ZipEntry& e : entries) {
    const uint64_t local = out.size();
    out += le(0x04034b50, 4) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4) + le(e.data.size(), 4) +
           le(e.data.size(), 4) + le(e.name.size(), 2) + le(0, 2) + e.name + e.data;
    const bool zip64 = e.size_override != 0;
    const uint64_t size32 = zip64 ? 0xFFFFFFFF : e.data.size();
    const std::string extra = zip64 ? le(1, 2) + le(16, 2) + le(e.size_override, 8) + le(e.size_override, 8) : "";
    central += le(0x02014b50, 4) + le(20, 2) + le(20, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4) + le(size32, 4) +
               le(size32, 4) + le(e.name.size(), 2) + le(extra.size(), 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(local, 4) +
               e.name + extra;
  }
  const uint64_t dir = out.size();
  out += central;
  out += le(0x06054b50, 4) + le(0, 2) + le(0, 2) + le(entries.size(), 2) + le(entries.size(), 2) + le(central.size(), 4) +
         le(dir, 4) + le(0, 2);
  return out;
}

// ---- pickle pieces (protocol 2) -------------------------------------------------------------
inline std::string unicode(const std::string& s) { return "X" + le(s.size(), 4) + s; }
inline std::string integer(int64_t v) { return "\x8a\x08" + le(uint64_t(v), 8); }  // LONG1, 8 bytes
inline std::string tuple_of(const std::vector<std::string>& items) {
  std::string out = "(";
  for (const std::string& i : items) out += i;
  return out + "t";
}

// A tensor's record: a view of the storage (element offset, sizes, strides).
struct View {
  int64_t offset = 0;
  std::vector<int64_t> shape, stride;
};

// {name: tensor, ...} over one f32 storage "0" of `numel` elements, the records
// torch.save writes: tensor k is views[k], named names[k] (w0, w1, ... when not given).
inline std::string views_pickle(int64_t numel, const std::vector<View>& views, const std::vector<std::string>& names = {}) {
  const std::string pid = tuple_of({unicode("storage"), "ctorch\nFloatStorage\n", unicode("0"), unicode("cpu"), integer(numel)});
  std::string out = "\x80\x02}";
  for (size_t k = 0; k < views.size(); ++k) {
    std::vector<std::string> sh, st;
    for (int64_t v : views[k].shape) sh.push_back(integer(v));
    for (int64_t v : views[k].stride) st.push_back(integer(v));
    out += unicode(k < names.size() ? names[k] : std::string("w").append(std::to_string(k))) + "ctorch._utils\n_rebuild_tensor_v2\n" +
           tuple_of({pid + "Q", integer(views[k].offset), tuple_of(sh), tuple_of(st), "\x89", "}"}) + "Rs";
  }
  return out + ".";
}

// {'w': tensor} with the shape, strides and offset given.
inline std::string tensor_pickle(int64_t numel, const std::vector<int64_t>& shape, const std::vector<int64_t>& stride, int64_t offset = 0) {
  return views_pickle(numel, {{offset, shape, stride}}, {"w"});
}

// `count` views of one storage of `numel` elements: view k from element k * shift to the end.
inline std::string shared_storage_pickle(int count, int64_t numel, int64_t shift) {
  std::vector<View> views;
  for (int k = 0; k < count; ++k) views.push_back({k * shift, {numel - k * shift}, {1}});
  return views_pickle(numel, views);
}

// The archive torch.save writes around a pickle, its storage "0" of `storage_bytes` zeros.
inline std::string torch_file(const std::string& pickle, size_t storage_bytes = 16) {
  return zip({{"archive/data.pkl", pickle}, {"archive/data/0", std::string(storage_bytes, '\0')}, {"archive/byteorder", "little"}});
}

}  // namespace emonext::test
