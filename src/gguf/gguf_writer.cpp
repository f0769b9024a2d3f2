#include "gguf/gguf_writer.h"

#include <cstring>

#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the GGUF writer assumes a little-endian host");

namespace mf::gguf {

namespace {

// AtomicFile with a buffer: tensor fills write in small pieces (one row block at a time).
class BufferedFile {
 public:
  explicit BufferedFile(const std::string& path) : file_(path) { buf_.reserve(kCap); }
  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    if (buf_.size() + n > kCap) flush();
    if (n >= kCap) {
      file_.write(p, n);
    } else {
      buf_.append(p, n);
    }
    written_ += n;
  }
  void pad_to(uint64_t alignment) {
    static const char zeros[64] = {};
    uint64_t pad = align_up(written_, alignment) - written_;
    while (pad > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(pad, sizeof(zeros)));
      write(zeros, n);
      pad -= n;
    }
  }
  void flush() {
    if (!buf_.empty()) file_.write(buf_.data(), buf_.size());
    buf_.clear();
  }
  void commit() {
    flush();
    file_.commit();
  }
  uint64_t written() const { return written_; }

 private:
  static constexpr size_t kCap = size_t(4) << 20;
  AtomicFile file_;
  std::string buf_;
  uint64_t written_ = 0;
};

}  // namespace

Writer::Writer(const std::string& arch) {
  add_string("general.architecture", arch);
  add_u32("general.alignment", alignment_);
}

template <typename T>
void Writer::put(T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  kv_.append(b, sizeof(T));
}

void Writer::put_string(const std::string& s) {
  put<uint64_t>(s.size());
  kv_.append(s);
}

void Writer::begin_kv(const std::string& key, ValueType type) {
  if (key.empty()) fail("GGUF metadata key is empty");
  if (!keys_.insert(key).second) fail("GGUF metadata key '" + key + "' written twice");
  put_string(key);
  put<uint32_t>(static_cast<uint32_t>(type));
  ++n_kv_;
}

void Writer::begin_array(const std::string& key, ValueType elem, uint64_t n) {
  // llama.cpp's gguf-py refuses empty arrays; so do we (an empty list is left out by callers).
  if (n == 0) fail("GGUF metadata array '" + key + "' is empty");
  begin_kv(key, ValueType::ARRAY);
  put<uint32_t>(static_cast<uint32_t>(elem));
  put<uint64_t>(n);
}

void Writer::add_u8(const std::string& key, uint8_t v) { begin_kv(key, ValueType::UINT8); put(v); }
void Writer::add_i8(const std::string& key, int8_t v) { begin_kv(key, ValueType::INT8); put(v); }
void Writer::add_u16(const std::string& key, uint16_t v) { begin_kv(key, ValueType::UINT16); put(v); }
void Writer::add_i16(const std::string& key, int16_t v) { begin_kv(key, ValueType::INT16); put(v); }
void Writer::add_u32(const std::string& key, uint32_t v) { begin_kv(key, ValueType::UINT32); put(v); }
void Writer::add_i32(const std::string& key, int32_t v) { begin_kv(key, ValueType::INT32); put(v); }
void Writer::add_u64(const std::string& key, uint64_t v) { begin_kv(key, ValueType::UINT64); put(v); }
void Writer::add_i64(const std::string& key, int64_t v) { begin_kv(key, ValueType::INT64); put(v); }
void Writer::add_f32(const std::string& key, float v) { begin_kv(key, ValueType::FLOAT32); put(v); }
void Writer::add_f64(const std::string& key, double v) { begin_kv(key, ValueType::FLOAT64); put(v); }
void Writer::add_bool(const std::string& key, bool v) {
  begin_kv(key, ValueType::BOOL);
  put<uint8_t>(v ? 1 : 0);
}
void Writer::add_string(const std::string& key, const std::string& v) {
  begin_kv(key, ValueType::STRING);
  put_string(v);
}

void Writer::add_string_array(const std::string& key, const std::vector<std::string>& v) {
  begin_array(key, ValueType::STRING, v.size());
  for (const auto& s : v) put_string(s);
}
void Writer::add_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  begin_array(key, ValueType::INT32, v.size());
  for (int32_t x : v) put(x);
}
void Writer::add_u32_array(const std::string& key, const std::vector<uint32_t>& v) {
  begin_array(key, ValueType::UINT32, v.size());
  for (uint32_t x : v) put(x);
}
void Writer::add_f32_array(const std::string& key, const std::vector<float>& v) {
  begin_array(key, ValueType::FLOAT32, v.size());
  for (float x : v) put(x);
}

void Writer::add_tensor(const std::string& name, const std::vector<int64_t>& ne, TensorType type, TensorFill fill) {
  if (name.empty() || name.size() >= 64)  // GGML_MAX_NAME
    fail("GGUF tensor name '" + name + "' must have 1 to 63 bytes");
  if (!tensor_names_.insert(name).second) fail("GGUF tensor '" + name + "' written twice");
  if (ne.empty() || ne.size() > static_cast<size_t>(kMaxDims))
    fail(cat("GGUF tensor '", name, "' has ", ne.size(), " dimensions (1 to 4 allowed)"));
  for (int64_t d : ne)
    if (d <= 0) fail(cat("GGUF tensor '", name, "' has a dimension of ", d));
  const int64_t nbytes = tensor_nbytes(ne, static_cast<uint32_t>(type));
  if (nbytes < 0)
    fail(cat("GGUF tensor '", name, "': rows of ", ne[0], " elements cannot be stored as ",
             type_traits(static_cast<uint32_t>(type)).name));
  TensorInfo t{name, ne, type, static_cast<uint64_t>(nbytes), next_offset_, std::move(fill)};
  next_offset_ += align_up(t.nbytes, alignment_);
  tensors_.push_back(std::move(t));
}

uint64_t Writer::data_bytes() const { return next_offset_; }

void Writer::write(const std::string& path, const std::function<void(uint64_t, uint64_t)>& progress) const {
  BufferedFile f(path);
  auto u32 = [&](uint32_t v) { f.write(&v, 4); };
  auto u64 = [&](uint64_t v) { f.write(&v, 8); };
  u32(kMagic);
  u32(kVersion);
  u64(tensors_.size());
  u64(n_kv_);
  f.write(kv_.data(), kv_.size());
  for (const auto& t : tensors_) {
    u64(t.name.size());
    f.write(t.name.data(), t.name.size());
    u32(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) u64(static_cast<uint64_t>(d));
    u32(static_cast<uint32_t>(t.type));
    u64(t.offset);
  }
  f.pad_to(alignment_);
  const uint64_t data_start = f.written();
  for (const auto& t : tensors_) {
    if (f.written() - data_start != t.offset) fail("internal: GGUF tensor '" + t.name + "' misplaced");
    uint64_t got = 0;
    t.fill([&](const void* data, size_t n) {
      got += n;
      if (got > t.nbytes) fail(cat("internal: GGUF tensor '", t.name, "' produced more than ", t.nbytes, " bytes"));
      f.write(data, n);
    });
    if (got != t.nbytes)
      fail(cat("internal: GGUF tensor '", t.name, "' produced ", got, " bytes, expected ", t.nbytes));
    f.pad_to(alignment_);
    if (progress) progress(f.written() - data_start, next_offset_);
  }
  f.commit();
}

}  // namespace mf::gguf
