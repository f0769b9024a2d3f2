#include "gguf/gguf_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "util/error.h"
#include "util/fs.h"
#include "util/fs_checks.h"
#include "util/str.h"

namespace mf::gguf {

namespace {

// Sequential reads with a buffer; every read is checked against the file's size.
class Cursor {
 public:
  Cursor(std::string path, int fd, uint64_t size) : path_(std::move(path)), fd_(fd), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void read(void* out, uint64_t n, const char* what) {
    if (n > remaining())
      fail_file(path_, cat("file is truncated: ", what, " at byte ", pos_, " needs ", n, " bytes, ", remaining(),
                           " left"));
    char* o = static_cast<char*>(out);
    while (n > 0) {
      if (buf_pos_ == buf_.size()) refill();
      const uint64_t take = std::min<uint64_t>(n, buf_.size() - buf_pos_);
      std::memcpy(o, buf_.data() + buf_pos_, take);
      buf_pos_ += take;
      o += take;
      n -= take;
      pos_ += take;
    }
  }
  template <typename T>
  T get(const char* what) {
    T v;
    read(&v, sizeof(T), what);
    return v;
  }
  std::string get_string(const char* what) {
    const uint64_t n = get<uint64_t>(what);
    if (n > remaining())
      fail_file(path_, cat("file is truncated: ", what, " at byte ", pos_ - 8, " has length ", n, " but only ",
                           remaining(), " bytes are left"));
    std::string s(n, '\0');
    read(s.data(), n, what);
    return s;
  }

 private:
  void refill() {
    buf_.resize(static_cast<size_t>(std::min<uint64_t>(kChunk, size_ - pos_)));
    size_t got = 0;
    while (got < buf_.size()) {
      ssize_t r = ::pread(fd_, buf_.data() + got, buf_.size() - got, static_cast<off_t>(pos_ + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) fail_file(path_, r < 0 ? cat("read failed: ", std::strerror(errno)) : "file shrank while reading");
      got += static_cast<size_t>(r);
    }
    buf_pos_ = 0;
  }
  static constexpr uint64_t kChunk = 1 << 16;
  std::string path_;
  int fd_;
  uint64_t size_, pos_ = 0;
  std::string buf_;
  size_t buf_pos_ = 0;
};

class Fd {
 public:
  explicit Fd(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) fail_file(path, cat("cannot open: ", std::strerror(errno)));
  }
  ~Fd() { ::close(fd_); }
  int get() const { return fd_; }

 private:
  int fd_;
};

json read_scalar(Cursor& c, ValueType t) {
  switch (t) {
    case ValueType::UINT8: return c.get<uint8_t>("a u8 value");
    case ValueType::INT8: return c.get<int8_t>("an i8 value");
    case ValueType::UINT16: return c.get<uint16_t>("a u16 value");
    case ValueType::INT16: return c.get<int16_t>("an i16 value");
    case ValueType::UINT32: return c.get<uint32_t>("a u32 value");
    case ValueType::INT32: return c.get<int32_t>("an i32 value");
    case ValueType::FLOAT32: return c.get<float>("an f32 value");
    case ValueType::BOOL: return c.get<uint8_t>("a bool value") != 0;
    case ValueType::UINT64: return c.get<uint64_t>("a u64 value");
    case ValueType::INT64: return c.get<int64_t>("an i64 value");
    case ValueType::FLOAT64: return c.get<double>("an f64 value");
    case ValueType::STRING: {
      // Metadata strings are UTF-8 by the format; bytes that are not are kept as U+FFFD in JSON.
      std::string s = c.get_string("a string value");
      return json(s);
    }
    default: return json();
  }
}

std::string shape_of(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

}  // namespace

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

const KeyValue* File::find(const std::string& key) const {
  for (const auto& kv : this->kv)
    if (kv.key == key) return &kv;
  return nullptr;
}

std::string File::get_string(const std::string& key, const std::string& fallback) const {
  const KeyValue* v = find(key);
  return v && v->type == ValueType::STRING ? v->value.get<std::string>() : fallback;
}

int64_t File::get_int(const std::string& key, int64_t fallback) const {
  const KeyValue* v = find(key);
  if (!v || v->type == ValueType::ARRAY || v->type == ValueType::STRING || v->type == ValueType::FLOAT32 ||
      v->type == ValueType::FLOAT64 || v->type == ValueType::BOOL)
    return fallback;
  return v->value.is_number_unsigned() ? static_cast<int64_t>(v->value.get<uint64_t>()) : v->value.get<int64_t>();
}

double File::get_float(const std::string& key, double fallback) const {
  const KeyValue* v = find(key);
  if (!v || !v->value.is_number()) return fallback;
  return v->value.get<double>();
}

bool has_gguf_magic(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  uint32_t magic = 0;
  const bool ok = ::pread(fd, &magic, 4, 0) == 4 && magic == kMagic;
  ::close(fd);
  return ok;
}

File read_file(const std::string& path) {
  require_regular_file(path);
  File f;
  f.path = path;
  f.file_size = file_size(path);
  Fd fd(path);
  Cursor c(path, fd.get(), f.file_size);

  if (f.file_size < 4) fail_file(path, cat("not a GGUF file: ", f.file_size, " bytes, no magic"));
  const uint32_t magic = c.get<uint32_t>("the magic");
  if (magic != kMagic) fail_file(path, "not a GGUF file (the first 4 bytes are not \"GGUF\")");
  f.version = c.get<uint32_t>("the version");
  if (f.version == 1) fail_file(path, "GGUF version 1 is not supported (llama.cpp reads versions 2 and 3)");
  if (f.version != 2 && f.version != 3) {
    if ((f.version & 0xffff) == 0)  // a big-endian writer's 2 or 3
      fail_file(path, "big-endian GGUF files are not supported");
    fail_file(path, cat("unsupported GGUF version ", f.version));
  }
  const uint64_t n_tensors = c.get<uint64_t>("the tensor count");
  const uint64_t n_kv = c.get<uint64_t>("the metadata count");
  // Each KV pair takes at least 8 + 1 + 4 + 1 bytes, each tensor info 8 + 1 + 4 + 4 + 8.
  if (n_kv > c.remaining() / 14)
    fail_file(path, cat("file is truncated or corrupt: ", n_kv, " metadata entries cannot fit in the ", c.remaining(),
                        " bytes after the header"));
  if (n_tensors > c.remaining() / 25)
    fail_file(path, cat("file is truncated or corrupt: ", n_tensors, " tensor infos cannot fit in the ", c.remaining(),
                        " bytes after the header"));

  std::set<std::string> keys;
  f.kv.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    KeyValue kv;
    kv.key = c.get_string("a metadata key");
    if (kv.key.empty()) fail_file(path, cat("metadata key ", i, " is empty"));
    if (!keys.insert(kv.key).second) fail_file(path, "duplicate metadata key '" + kv.key + "'");
    const uint32_t t = c.get<uint32_t>("a value type");
    if (!value_type_known(t)) fail_file(path, cat("metadata key '", kv.key, "' has unknown value type ", t));
    kv.type = static_cast<ValueType>(t);
    if (kv.type == ValueType::ARRAY) {
      const uint32_t et = c.get<uint32_t>("an array type");
      if (!value_type_known(et)) fail_file(path, cat("metadata array '", kv.key, "' has unknown element type ", et));
      kv.elem_type = static_cast<ValueType>(et);
      if (kv.elem_type == ValueType::ARRAY)
        fail_file(path, "metadata array '" + kv.key + "' holds arrays (nested arrays are not supported, as in llama.cpp)");
      kv.count = c.get<uint64_t>("an array length");
      const uint64_t min_elem = kv.elem_type == ValueType::STRING ? 8 : value_type_size(kv.elem_type);
      if (kv.count > c.remaining() / min_elem)
        fail_file(path, cat("metadata array '", kv.key, "' has ", kv.count, " elements, more than the file holds"));
      kv.value = json::array();
      for (uint64_t j = 0; j < kv.count; ++j) kv.value.push_back(read_scalar(c, kv.elem_type));
    } else {
      kv.value = read_scalar(c, kv.type);
    }
    f.kv.push_back(std::move(kv));
  }

  if (const KeyValue* a = f.find("general.alignment")) {
    if (a->type != ValueType::UINT32)
      fail_file(path, cat("general.alignment has type ", value_type_name(a->type), ", expected u32"));
    const uint32_t al = a->value.get<uint32_t>();
    if (al == 0 || (al & (al - 1)) != 0) fail_file(path, cat("general.alignment ", al, " is not a power of 2"));
    f.alignment = al;
  }

  std::set<std::string> names;
  f.tensors.reserve(static_cast<size_t>(n_tensors));
  uint64_t expected_offset = 0;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorEntry t;
    t.name = c.get_string("a tensor name");
    if (t.name.size() >= 64) fail_file(path, cat("tensor name '", t.name.substr(0, 64), "...' is longer than 63 bytes"));
    if (!names.insert(t.name).second) fail_file(path, "duplicate tensor '" + t.name + "'");
    const uint32_t n_dims = c.get<uint32_t>("a tensor's dimension count");
    if (n_dims > static_cast<uint32_t>(kMaxDims))
      fail_file(path, cat("tensor '", t.name, "' has ", n_dims, " dimensions (at most 4)"));
    for (uint32_t d = 0; d < n_dims; ++d) {
      const int64_t v = c.get<int64_t>("a tensor dimension");
      if (v < 0) fail_file(path, cat("tensor '", t.name, "' has a negative dimension ", v));
      t.ne.push_back(v);
    }
    if (t.ne.empty()) t.ne.push_back(1);
    t.type = c.get<uint32_t>("a tensor type");
    const TypeTraits tr = type_traits(t.type);
    if (!tr.name) fail_file(path, cat("tensor '", t.name, "' has unknown ggml type ", t.type));
    if (t.ne[0] % tr.block_size != 0)
      fail_file(path, cat("tensor '", t.name, "' of type ", tr.name, " has rows of ", t.ne[0],
                          " elements, not a multiple of its block size ", tr.block_size));
    const int64_t nbytes = tensor_nbytes(t.ne, t.type);
    if (nbytes < 0) fail_file(path, cat("tensor '", t.name, "' is too large: ", shape_of(t.ne)));
    t.nbytes = static_cast<uint64_t>(nbytes);
    t.offset = c.get<uint64_t>("a tensor offset");
    if (t.offset != expected_offset)
      fail_file(path, cat("tensor '", t.name, "' has data offset ", t.offset, ", expected ", expected_offset,
                          " (tensors are stored in order, each padded to ", f.alignment, " bytes)"));
    const uint64_t padded = align_up(t.nbytes, f.alignment);
    if (padded < t.nbytes || expected_offset + padded < expected_offset)
      fail_file(path, cat("tensor '", t.name, "': data offsets overflow"));
    expected_offset += padded;
    f.tensors.push_back(std::move(t));
  }
  f.data_offset = align_up(c.pos(), f.alignment);
  if (!f.tensors.empty()) {
    const TensorEntry& last = f.tensors.back();
    const uint64_t end = f.data_offset + last.offset + last.nbytes;
    if (end < f.data_offset || end > f.file_size)
      fail_file(path, cat("file is truncated: tensor data ends at byte ", end, " but the file has ", f.file_size,
                          " bytes (last tensor '", last.name, "')"));
  }
  return f;
}

}  // namespace mf::gguf
