#include "core/torch_file.h"

#include <cstring>
#include <fstream>
#include <map>
#include <tuple>

#include "core/base/error.h"
#include "core/base/file.h"
#include "core/base/limits.h"

namespace emonext {

PyRef PyObject::get(const std::string& key) const {
  for (const auto& [k, v] : dict)
    if (k->kind == Kind::String && k->s == key) return v;
  return nullptr;
}

namespace {

// ---- the zip archive -------------------------------------------------------------
struct Zip {
  std::string path;
  std::vector<char> bytes;
  std::map<std::string, std::pair<uint64_t, uint64_t>> entries;  // name -> (data offset, size)

  [[noreturn]] void corrupt(const std::string& what) const {
    throw Error(path + ": corrupt or truncated torch file (" + what + "); re-download it or save it again with torch.save");
  }
  // The n-byte little-endian value at `at` (every offset comes from the file: checked
  // without computing at + n, which could wrap).
  uint64_t u(uint64_t at, int n) const {
    if (at > bytes.size() || uint64_t(n) > bytes.size() - at) corrupt("a record runs past the end of the file");
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | uint8_t(bytes[size_t(at) + size_t(k)]);
    return v;
  }
  // at + n for offsets and lengths read from the file, refused past the end of the file.
  uint64_t within(uint64_t at, uint64_t n, const char* what) const {
    if (at > bytes.size() || n > bytes.size() - at) corrupt(what);
    return at + n;
  }

  Zip(std::vector<char> file, const std::string& p) : path(p), bytes(std::move(file)) {
    // The end-of-central-directory record: the last 0x06054b50 within 64 KiB of the end.
    if (bytes.size() < 22) corrupt("too short for a zip archive");
    int64_t eocd = -1;
    for (int64_t at = int64_t(bytes.size()) - 22; at >= 0 && at >= int64_t(bytes.size()) - 22 - 65535; --at)
      if (u(uint64_t(at), 4) == 0x06054b50) { eocd = at; break; }
    if (eocd < 0) corrupt("no end-of-central-directory record");
    uint64_t count = u(uint64_t(eocd) + 10, 2), dir = u(uint64_t(eocd) + 16, 4);
    if (count == 0xFFFF || dir == 0xFFFFFFFF) {  // zip64: the locator sits just before
      if (eocd < 20 || u(uint64_t(eocd) - 20, 4) != 0x07064b50) corrupt("zip64 locator missing");
      const uint64_t rec = u(uint64_t(eocd) - 12, 8);
      if (u(rec, 4) != 0x06064b50) corrupt("zip64 end record missing");
      count = u(rec + 32, 8);
      dir = u(rec + 48, 8);
    }
    // Each central directory entry takes at least 46 bytes of the file.
    if (count > bytes.size() / 46) corrupt("more directory entries than the file can hold");
    uint64_t at = dir;
    for (uint64_t e = 0; e < count; ++e) {
      if (u(at, 4) != 0x02014b50) corrupt("bad central directory entry");
      const uint64_t method = u(at + 10, 2), name_len = u(at + 28, 2), extra_len = u(at + 30, 2), comment_len = u(at + 32, 2);
      uint64_t size = u(at + 24, 4), local = u(at + 42, 4);
      const uint64_t name_at = within(at, 46, "entry past the end"), extra_at = within(name_at, name_len, "entry name past the end");
      const uint64_t next = within(within(extra_at, extra_len, "extra field past the end"), comment_len, "comment past the end");
      const std::string name(bytes.data() + name_at, name_len);
      // zip64 extra field: the 64-bit values of whichever fields are 0xFFFFFFFF, in order.
      for (uint64_t x = extra_at; x + 4 <= extra_at + extra_len;) {
        const uint64_t id = u(x, 2), len = u(x + 2, 2);
        if (id == 0x0001) {
          uint64_t y = x + 4;
          if (size == 0xFFFFFFFF) { size = u(y, 8); y += 8; }
          if (u(at + 20, 4) == 0xFFFFFFFF) y += 8;  // compressed size
          if (local == 0xFFFFFFFF) local = u(y, 8);
        }
        x += 4 + len;
      }
      if (method != 0)
        throw Error(path + ": entry " + name + " is compressed (method " + std::to_string(method) +
                    "); torch.save stores entries uncompressed, so this is not a file torch.save wrote");
      if (u(local, 4) != 0x04034b50) corrupt("bad local header for " + name);
      const uint64_t data = within(within(local, 30, "local header past the end"), u(local + 26, 2) + u(local + 28, 2),
                                   "local header past the end");
      within(data, size, ("entry " + name + " runs past the end of the file").c_str());
      entries[name] = {data, size};
      at = next;
    }
  }

  const std::pair<uint64_t, uint64_t>& entry(const std::string& name) const {
    const auto it = entries.find(name);
    if (it == entries.end()) corrupt("no entry " + name);
    return it->second;
  }
};

// ---- pickle -------------------------------------------------------------------------
PyRef make(PyObject::Kind k) {
  auto o = std::make_shared<PyObject>();
  o->kind = k;
  return o;
}

// The graph a hostile pickle can build through its memo is not a tree: a container can
// hold itself (a reference cycle, never freed), or a chain of containers can be nested
// 200,000 deep (freed by recursion, which overflows the stack). `check_graph` walks the
// result once, without recursion, and refuses a cycle or a nesting past
// limits::kMaxNesting; `unlink` empties every container made, so that whatever the
// objects' shape, each is freed on its own.
void unlink(std::vector<PyRef>& made) {
  for (const PyRef& o : made) {
    o->items.clear();
    o->dict.clear();
  }
}

void check_graph(const std::vector<PyRef>& made, const std::string& path) {
  enum : uint8_t { Open = 1, Done = 2 };
  std::map<const PyObject*, std::pair<uint8_t, int>> seen;  // state, depth below (for Done)
  struct Frame { const PyObject* o; size_t next; };
  std::vector<Frame> stack;
  const auto child = [](const PyObject* o, size_t k) -> const PyObject* {
    if (k < o->items.size()) return o->items[k].get();
    k -= o->items.size();
    return k / 2 < o->dict.size() ? (k % 2 ? o->dict[k / 2].second : o->dict[k / 2].first).get() : nullptr;
  };
  for (const PyRef& root : made) {  // every object, reachable from the result or not
    if (!seen.try_emplace(root.get(), Open, 0).second) continue;
    stack.push_back({root.get(), 0});
  while (!stack.empty()) {
    Frame& f = stack.back();
    if (const PyObject* c = child(f.o, f.next++)) {
      auto [it, fresh] = seen.try_emplace(c, Open, 0);
      if (fresh) {
        if (stack.size() >= size_t(limits::kMaxNesting))
          fail(detail::concat(path, ": the pickle nests containers more than ", limits::kMaxNesting, " deep"));
        stack.push_back({c, 0});
      } else if (it->second.first == Open) {
        fail(detail::concat(path, ": the pickle holds a container that contains itself"));
      } else if (it->second.second + stack.size() >= size_t(limits::kMaxNesting)) {
        fail(detail::concat(path, ": the pickle nests containers more than ", limits::kMaxNesting, " deep"));
      }
      continue;
    }
    int below = 0;
    for (size_t k = 0; const PyObject* c = child(f.o, k); ++k) below = std::max(below, seen[c].second + 1);
    seen[f.o] = {Done, below};
    stack.pop_back();
  }
  }
}

DType storage_dtype(const std::string& cls, const std::string& path) {
  static const std::map<std::string, DType> types = {
      {"torch.FloatStorage", DType::F32}, {"torch.DoubleStorage", DType::F64}, {"torch.HalfStorage", DType::F16},
      {"torch.BFloat16Storage", DType::BF16}, {"torch.LongStorage", DType::I64}, {"torch.ByteStorage", DType::U8}};
  const auto it = types.find(cls);
  EMONEXT_CHECK(it != types.end(), path, ": tensors stored as ", cls, " are not supported (f32, f64, f16, bf16, i64, u8 are)");
  return it->second;
}

class Unpickler {
 public:
  Unpickler(const Zip& zip, std::string prefix) : zip_(zip), prefix_(std::move(prefix)) {
    const auto [at, size] = zip.entry(prefix_ + "data.pkl");
    p_ = zip.bytes.data() + at;
    end_ = p_ + size;
    begin_ = p_;
  }

  // The object the pickle builds, checked by check_graph; every container this
  // unpickler made is emptied when it fails (see unlink).
  PyRef run() {
    try {
      PyRef root = interpret();
      check_graph(made_, zip_.path);
      return root;
    } catch (...) {
      unlink(made_);
      throw;
    }
  }

 private:
  PyRef interpret() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;               // PROTO
        case 0x95: take(8); break;              // FRAME
        case '}': push(object(PyObject::Kind::Dict)); break;
        case ']': push(object(PyObject::Kind::List)); break;
        case ')': push(object(PyObject::Kind::Tuple)); break;
        case 0x8f: push(object(PyObject::Kind::List)); break;  // EMPTY_SET: a list will do
        case '(': marks_.push_back(stack_.size()); break;
        case 'X': push(string(uint32(4))); break;      // BINUNICODE
        case 0x8c: push(string(uint32(1))); break;     // SHORT_BINUNICODE
        case 'T': case 'B': push(string(uint32(4))); break;  // BINSTRING, BINBYTES
        case 'U': case 'C': push(string(uint32(1))); break;  // SHORT_BINSTRING, SHORT_BINBYTES
        case 'q': memo_[uint32(1)] = top(); break;      // BINPUT
        case 'r': memo_[uint32(4)] = top(); break;      // LONG_BINPUT
        case 0x94: memo_[uint32_t(memo_.size())] = top(); break;  // MEMOIZE
        case 'h': push(memo(uint32(1))); break;          // BINGET
        case 'j': push(memo(uint32(4))); break;          // LONG_BINGET
        case 'c': {                                      // GLOBAL module\nname\n
          const std::string module = line(), name = line();
          push(global(module + "." + name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          const PyRef name = pop(), module = pop();
          push(global(module->s + "." + name->s));
          break;
        }
        case 'Q': push(persistent(pop())); break;  // BINPERSID
        case 't': push(tuple(pop_mark())); break;
        case 0x85: { auto a = pop(); push(tuple({a})); break; }
        case 0x86: { auto b = pop(), a = pop(); push(tuple({a, b})); break; }
        case 0x87: { auto c = pop(), b = pop(), a = pop(); push(tuple({a, b, c})); break; }
        case 'J': push(integer(int32_t(uint32(4)))); break;
        case 'K': push(integer(uint32(1))); break;
        case 'M': push(integer(uint32(2))); break;
        case 0x8a: {  // LONG1: n little-endian two's-complement bytes
          const uint32_t n = uint32(1);
          EMONEXT_CHECK(n <= 8, zip_.path, ": integer of ", n, " bytes in the pickle");
          const char* b = take(n);
          uint64_t v = 0;
          for (int k = int(n) - 1; k >= 0; --k) v = (v << 8) | uint8_t(b[k]);
          if (n > 0 && n < 8 && (uint8_t(b[n - 1]) & 0x80)) v |= ~uint64_t(0) << (8 * n);
          push(integer(int64_t(v)));
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          const char* b = take(8);
          uint64_t v = 0;
          for (int k = 0; k < 8; ++k) v = (v << 8) | uint8_t(b[k]);
          auto o = object(PyObject::Kind::Float);
          std::memcpy(&o->f, &v, 8);
          push(o);
          break;
        }
        case 0x88: case 0x89: { auto o = object(PyObject::Kind::Bool); o->i = op == 0x88; push(o); break; }
        case 'N': push(object(PyObject::Kind::None)); break;
        case 'R': { auto args = pop(), fn = pop(); push(reduce(fn, args)); break; }
        case 0x81: { auto args = pop(), cls = pop(); push(reduce(cls, args)); break; }  // NEWOBJ
        case 's': { auto v = pop(), k = pop(); top()->dict.emplace_back(k, v); break; }
        case 'u': {
          auto items = pop_mark();
          for (size_t k = 0; k + 1 < items.size(); k += 2) top()->dict.emplace_back(items[k], items[k + 1]);
          break;
        }
        case 'a': { auto v = pop(); top()->items.push_back(v); break; }
        case 'e': case 0x90: {  // APPENDS, ADDITEMS
          auto items = pop_mark();
          for (auto& v : items) top()->items.push_back(v);
          break;
        }
        case 'b': pop(); break;  // BUILD: state for an object we keep opaque
        case '.': return pop();
        default:
          throw Error(zip_.path + ": unsupported pickle opcode 0x" + hex(op) + " at byte " + std::to_string(p_ - begin_ - 1) +
                      " of data.pkl (not a plain torch.save of tensors?)");
      }
    }
  }

  [[noreturn]] void truncated() const { zip_.corrupt("data.pkl ends early"); }
  const char* take(size_t n) {
    if (size_t(end_ - p_) < n) truncated();
    const char* at = p_;
    p_ += n;
    return at;
  }
  uint8_t byte() { return uint8_t(*take(1)); }
  uint32_t uint32(int n) {
    const char* b = take(size_t(n));
    uint32_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | uint8_t(b[k]);
    return v;
  }
  std::string line() {
    const char* nl = static_cast<const char*>(std::memchr(p_, '\n', size_t(end_ - p_)));
    if (!nl) truncated();
    std::string s(p_, nl);
    p_ = nl + 1;
    return s;
  }
  static std::string hex(uint8_t v) {
    const char* d = "0123456789abcdef";
    return {d[v >> 4], d[v & 15]};
  }
  PyRef string(uint32_t n) {
    auto o = object(PyObject::Kind::String);
    o->s.assign(take(n), n);
    return o;
  }
  PyRef integer(int64_t v) {
    auto o = object(PyObject::Kind::Int);
    o->i = v;
    return o;
  }
  PyRef tuple(std::vector<PyRef> items) {
    auto o = object(PyObject::Kind::Tuple);
    o->items = std::move(items);
    return o;
  }
  PyRef global(const std::string& name) {
    auto o = object(PyObject::Kind::Global);
    o->s = name;
    return o;
  }
  // Every object comes from here: counted against limits::kMaxPickleObjects and kept in
  // made_, so that a failure can unlink them all.
  PyRef object(PyObject::Kind k) {
    if (int64_t(made_.size()) >= limits::kMaxPickleObjects)
      zip_.corrupt("more than " + std::to_string(limits::kMaxPickleObjects) + " objects in the pickle");
    made_.push_back(make(k));
    return made_.back();
  }
  void push(PyRef o) { stack_.push_back(std::move(o)); }
  PyRef pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) zip_.corrupt("pickle stack underflow");
    PyRef o = stack_.back();
    stack_.pop_back();
    return o;
  }
  PyRef top() {
    if (stack_.empty()) zip_.corrupt("pickle stack underflow");
    return stack_.back();
  }
  std::vector<PyRef> pop_mark() {
    if (marks_.empty()) zip_.corrupt("pickle mark missing");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyRef> items(stack_.begin() + std::ptrdiff_t(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  PyRef memo(uint32_t k) {
    const auto it = memo_.find(k);
    if (it == memo_.end()) zip_.corrupt("pickle memo " + std::to_string(k) + " unset");
    return it->second;
  }

  // ('storage', storage class, key, location, numel)
  PyRef persistent(const PyRef& pid) {
    if (pid->kind != PyObject::Kind::Tuple || pid->items.size() < 5 || pid->items[0]->s != "storage")
      zip_.corrupt("unexpected persistent id");
    auto o = object(PyObject::Kind::Storage);
    o->dtype = storage_dtype(pid->items[1]->s, zip_.path);
    o->s = pid->items[2]->s;
    o->i = pid->items[4]->i;
    return o;
  }

  PyRef reduce(const PyRef& fn, const PyRef& args) {
    const std::string name = fn->kind == PyObject::Kind::Global ? fn->s : "";
    if (name == "collections.OrderedDict" || name == "builtins.dict") return object(PyObject::Kind::Dict);
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") return rebuild_tensor(args);
    if (name == "torch._utils._rebuild_parameter" && !args->items.empty()) return args->items[0];
    auto o = object(PyObject::Kind::Opaque);
    o->s = name;
    return o;
  }

  // (storage, storage_offset, size, stride, ...): a strided view of the storage, made
  // contiguous. Every number is the file's: the shape and strides are checked (rank,
  // sizes, no negative stride, one stride per dimension), the view must lie inside its
  // storage and the storage inside its zip entry, and the view may not hold more
  // elements than its storage (zero or overlapping strides, which torch.save writes
  // for an expanded view and never for a parameter, would let a few bytes ask for
  // gigabytes).
  PyRef rebuild_tensor(const PyRef& args) {
    if (args->items.size() < 4 || args->items[0]->kind != PyObject::Kind::Storage) zip_.corrupt("bad tensor record");
    const PyObject& st = *args->items[0];
    const std::string what = zip_.path + ": tensor in storage " + st.s;
    const int64_t offset = args->items[1]->i;
    Shape shape, stride;
    for (const PyRef& v : args->items[2]->items) shape.push_back(v->i);
    for (const PyRef& v : args->items[3]->items) stride.push_back(v->i);
    const int64_t n = limits::numel(shape, what, " (shape ", shape_str(shape), ")");
    if (stride.size() != shape.size()) zip_.corrupt(detail::concat("tensor in storage ", st.s, " has ", stride.size(), " strides for ", shape.size(), " dimensions"));
    const auto [at, bytes] = zip_.entry(prefix_ + "data/" + st.s);
    const int64_t esize = int64_t(dtype_size(st.dtype));
    if (st.i < 0 || uint64_t(limits::mul(st.i, esize, what)) > bytes) zip_.corrupt("storage " + st.s + " is shorter than its element count");
    if (n > st.i) zip_.corrupt(detail::concat("tensor in storage ", st.s, " has ", n, " elements, more than its storage's ", st.i));
    if (offset < 0) zip_.corrupt("a tensor's view runs past its storage");
    int64_t last = offset;  // the furthest element the view reaches
    for (size_t d = 0; d < shape.size(); ++d) {
      if (stride[d] < 0) zip_.corrupt(detail::concat("tensor in storage ", st.s, " has a negative stride"));
      if (shape[d] > 0) last = limits::add(last, limits::mul(shape[d] - 1, stride[d], what), what);
    }
    if (offset < 0 || (n > 0 && last >= st.i)) zip_.corrupt("a tensor's view runs past its storage");
    // Each view is copied out once: the same view again (tied weights) is the same tensor,
    // and the copies together may hold at most the file's size, which views that overlap in
    // a storage would pass (2,000 views of one 4 MiB storage asked for 8 GiB).
    auto [seen, fresh] = views_.try_emplace(std::make_tuple(st.s, offset, shape, stride), nullptr);
    if (!fresh) return seen->second;
    copied_ = limits::add(copied_, limits::mul(n, esize, what), what);
    if (uint64_t(copied_) > zip_.bytes.size())
      fail(detail::concat(zip_.path, ": its tensors ask for more than the file's ", zip_.bytes.size(),
                          " bytes (views that share one storage, each copied out); save them unshared (t.clone())"));
    Tensor out = Tensor::empty(shape, st.dtype);
    // Gather element by element through the strides (tensors are small next to I/O).
    const char* src = zip_.bytes.data() + at;
    char* dst = static_cast<char*>(out.data_ptr());
    std::vector<int64_t> idx(shape.size(), 0);
    for (int64_t k = 0; k < n; ++k) {
      int64_t e = offset;
      for (size_t d = 0; d < shape.size(); ++d) e += idx[d] * stride[d];
      std::memcpy(dst + size_t(k * esize), src + size_t(e * esize), size_t(esize));
      for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
        if (++idx[size_t(d)] < shape[size_t(d)]) break;
        idx[size_t(d)] = 0;
      }
    }
    auto o = object(PyObject::Kind::Tensor);
    o->tensor = out;
    return seen->second = o;
  }

  const Zip& zip_;
  std::string prefix_;
  const char *p_, *end_, *begin_;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::map<uint32_t, PyRef> memo_;
  std::vector<PyRef> made_;
  int64_t copied_ = 0;  // bytes of the tensors copied out so far
  std::map<std::tuple<std::string, int64_t, Shape, Shape>, PyRef> views_;  // (storage, offset, shape, stride) -> its tensor
};

}  // namespace

PyRef load_torch_file(const std::string& path) { return parse_torch_file(read_file(path), path); }

PyRef parse_torch_file(std::vector<char> bytes, const std::string& path) {
  EMONEXT_CHECK(bytes.size() >= 4 && bytes[0] == 'P' && bytes[1] == 'K' && bytes[2] == 3 && bytes[3] == 4, path,
                ": not a zip-format torch file. Files from PyTorch before 1.6 (a bare pickle) are not supported: load it in "
                "PyTorch and save it again with torch.save (or as safetensors)");
  const Zip zip(std::move(bytes), path);
  std::string prefix;
  for (const auto& [name, entry] : zip.entries)
    if (name.size() >= 8 && name.compare(name.size() - 8, 8, "data.pkl") == 0 && name.find('/') == name.size() - 9) {
      prefix = name.substr(0, name.size() - 8);
      break;
    }
  EMONEXT_CHECK(!prefix.empty(), path, ": a zip archive without <name>/data.pkl: not a torch.save file");
  const auto bo = zip.entries.find(prefix + "byteorder");
  if (bo != zip.entries.end()) {
    const std::string order(zip.bytes.data() + bo->second.first, bo->second.second);
    EMONEXT_CHECK(order == "little", path, ": stored ", order, "-endian; only little-endian files are supported");
  }
  return Unpickler(zip, prefix).run();
}

std::vector<std::pair<std::string, Tensor>> tensor_dict(const PyObject& dict) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [k, v] : dict.dict)
    if (k->kind == PyObject::Kind::String && v->kind == PyObject::Kind::Tensor) out.emplace_back(k->s, v->tensor);
  return out;
}

}  // namespace emonext
