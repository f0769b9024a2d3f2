#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100000000;  // the reference reader's HeaderTooLarge limit

struct DTypeRow {
  StDType type;
  const char* name;
  int size;
};
const DTypeRow kDTypes[] = {
    {StDType::F64, "F64", 8},     {StDType::F32, "F32", 4},         {StDType::F16, "F16", 2},
    {StDType::BF16, "BF16", 2},   {StDType::I64, "I64", 8},         {StDType::I32, "I32", 4},
    {StDType::I16, "I16", 2},     {StDType::I8, "I8", 1},           {StDType::U8, "U8", 1},
    {StDType::BOOL, "BOOL", 1},   {StDType::F8_E4M3, "F8_E4M3", 1}, {StDType::F8_E5M2, "F8_E5M2", 1},
    {StDType::U16, "U16", 2},     {StDType::U32, "U32", 4},         {StDType::U64, "U64", 8},
};

bool parse_dtype(const std::string& s, StDType& out) {
  for (const auto& row : kDTypes)
    if (s == row.name) {
      out = row.type;
      return true;
    }
  return false;
}

// float8 decoding (libtorch 1.13 has no float8 dtypes): E4M3FN has no infinities, 0x7f/0xff = NaN.
float decode_e4m3(uint8_t v) {
  int sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 0x7;
  float out;
  if (exp == 0xf && man == 0x7) out = std::numeric_limits<float>::quiet_NaN();
  else if (exp == 0) out = std::ldexp(static_cast<float>(man), -9);  // subnormal: man/8 * 2^-6
  else out = std::ldexp(1.0f + man / 8.0f, exp - 7);
  return sign ? -out : out;
}

float decode_e5m2(uint8_t v) {
  int sign = v >> 7, exp = (v >> 2) & 0x1f, man = v & 0x3;
  float out;
  if (exp == 0x1f) out = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else if (exp == 0) out = std::ldexp(static_cast<float>(man), -16);  // man/4 * 2^-14
  else out = std::ldexp(1.0f + man / 4.0f, exp - 15);
  return sign ? -out : out;
}

// A header is {name: {dtype, shape: [..], data_offsets: [..]}, __metadata__: {..}}: depth 3.
constexpr int kMaxHeaderDepth = 64;

// SAX pass over a header: collects the top-level keys and stops at a syntax error or at nesting
// deeper than kMaxHeaderDepth (nlohmann's parser is iterative, but its values are copied and
// destroyed recursively). Linear in the header size.
class HeaderScan : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::vector<std::string> top_keys;
  bool too_deep = false;
  std::string error;  // the parser's message when it stopped at a syntax error

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return enter(); }
  bool key(string_t& k) override {
    if (depth_ == 1) top_keys.push_back(k);
    return true;
  }
  bool end_object() override { return leave(); }
  bool start_array(std::size_t) override { return enter(); }
  bool end_array() override { return leave(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception& e) override {
    error = e.what();
    return false;
  }

 private:
  bool enter() {
    if (++depth_ > kMaxHeaderDepth) {
      too_deep = true;
      return false;
    }
    return true;
  }
  bool leave() {
    --depth_;
    return true;
  }
  int depth_ = 0;
};

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

const char* st_dtype_name(StDType t) {
  for (const auto& row : kDTypes)
    if (row.type == t) return row.name;
  return "?";
}

int st_dtype_size(StDType t) {
  for (const auto& row : kDTypes)
    if (row.type == t) return row.size;
  return 0;
}

at::ScalarType st_to_torch(StDType t) {
  switch (t) {
    case StDType::F64: return at::kDouble;
    case StDType::F32: return at::kFloat;
    case StDType::F16: return at::kHalf;
    case StDType::BF16: return at::kBFloat16;
    case StDType::I64: return at::kLong;
    case StDType::I32: return at::kInt;
    case StDType::I16: return at::kShort;
    case StDType::I8: return at::kChar;
    case StDType::U8: return at::kByte;
    case StDType::BOOL: return at::kBool;
    case StDType::F8_E4M3:
    case StDType::F8_E5M2: return at::kFloat;
    default: fail(cat("safetensors dtype ", st_dtype_name(t), " has no libtorch equivalent"));
  }
}

StDType torch_to_st(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return StDType::F64;
    case at::kFloat: return StDType::F32;
    case at::kHalf: return StDType::F16;
    case at::kBFloat16: return StDType::BF16;
    case at::kLong: return StDType::I64;
    case at::kInt: return StDType::I32;
    case at::kShort: return StDType::I16;
    case at::kChar: return StDType::I8;
    case at::kByte: return StDType::U8;
    case at::kBool: return StDType::BOOL;
    default: fail(cat("tensor dtype ", c10::toString(t), " cannot be stored in safetensors"));
  }
}

int64_t StTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void parse_safetensors_header(const std::string& header_json, uint64_t data_size, const std::string& origin,
                              std::vector<StTensorInfo>& tensors, std::map<std::string, std::string>& metadata) {
  tensors.clear();
  metadata.clear();
  auto invalid_json = [&](const std::string& what) {
    auto pos = what.find("] ");
    fail_file(origin, "header is not valid JSON: " + one_line(pos == std::string::npos ? what : what.substr(pos + 2)));
  };
  // First pass (SAX, linear): syntax, nesting depth and the top-level keys. Duplicate keys are
  // forbidden and nlohmann would silently keep the last one. (Not a parser callback: nlohmann's
  // callback parser rescans the enclosing object after every nested object, quadratic in the
  // number of tensors.)
  HeaderScan scan;
  if (!nlohmann::json::sax_parse(header_json, &scan)) {
    if (scan.too_deep) fail_file(origin, cat("header nests deeper than ", kMaxHeaderDepth, " levels"));
    invalid_json(scan.error);
  }
  // Second pass: the value itself, of a text now known to be valid and shallow.
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_json);
  } catch (const nlohmann::json::exception& e) {
    invalid_json(e.what());
  }
  if (!header.is_object()) fail_file(origin, "header is not a JSON object");
  std::vector<std::string>& top_keys = scan.top_keys;
  std::sort(top_keys.begin(), top_keys.end());
  auto dup = std::adjacent_find(top_keys.begin(), top_keys.end());
  if (dup != top_keys.end()) fail_file(origin, "duplicate tensor name '" + *dup + "' in header");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail_file(origin, "__metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail_file(origin, "__metadata__ value of '" + m.key() + "' is not a string");
        metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail_file(origin, "entry for tensor '" + name + "' is not an object");
    StTensorInfo info;
    info.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail_file(origin, "tensor '" + name + "' has no dtype");
    if (!parse_dtype(dt->get<std::string>(), info.dtype))
      fail_file(origin, "tensor '" + name + "' has unknown dtype '" + dt->get<std::string>() + "'");
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail_file(origin, "tensor '" + name + "' has no shape");
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) fail_file(origin, "tensor '" + name + "' has an invalid shape");
      uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail_file(origin, "tensor '" + name + "' has an invalid shape");
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail_file(origin, "tensor '" + name + "' has no valid data_offsets");
    info.begin = (*off)[0].get<uint64_t>();
    info.end = (*off)[1].get<uint64_t>();
    if (info.end < info.begin) fail_file(origin, "tensor '" + name + "' has data_offsets end before begin");
    // Expected byte size with overflow checks.
    unsigned __int128 bytes = static_cast<unsigned __int128>(st_dtype_size(info.dtype));
    for (int64_t d : info.shape) {
      bytes *= static_cast<uint64_t>(d);
      if (bytes > static_cast<unsigned __int128>(std::numeric_limits<uint64_t>::max()))
        fail_file(origin, "tensor '" + name + "' is impossibly large");
    }
    if (static_cast<uint64_t>(bytes) != info.nbytes())
      fail_file(origin, cat("tensor '", name, "' has ", info.nbytes(), " bytes but ", st_dtype_name(info.dtype), " ",
                            shape_str(info.shape), " needs ", static_cast<uint64_t>(bytes)));
    tensors.push_back(std::move(info));
  }
  std::sort(tensors.begin(), tensors.end(), [](const StTensorInfo& a, const StTensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const auto& t : tensors) {
    if (t.begin < expected) fail_file(origin, "tensor '" + t.name + "' overlaps the previous tensor");
    if (t.begin > expected) fail_file(origin, cat("gap in data before tensor '", t.name, "' (offset ", t.begin,
                                                  ", expected ", expected, ")"));
    expected = t.end;
  }
  if (expected < data_size)
    fail_file(origin, cat("file has ", data_size - expected, " trailing bytes after the last tensor"));
  if (expected > data_size)
    fail_file(origin, cat("file is truncated: tensor data needs ", expected, " bytes, only ", data_size, " present"));
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  if (is_directory(path)) fail_file(path, "is a directory, expected a .safetensors file");
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below); no effect on files.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail_file(path, errno == ENOENT ? "no such file" : std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail_file(path, "cannot stat");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_file(path, "not a regular file");
  }
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ < 8) {
    ::close(fd);
    fail_file(path, cat("file is truncated: ", f->size_, " bytes, no header length"));
  }
  // MAP_PRIVATE + PROT_WRITE: copy-on-write, so zero-copy tensors can be modified in place safely.
  void* m = ::mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) fail_file(path, std::string("cannot mmap: ") + std::strerror(errno));
  f->map_ = static_cast<uint8_t*>(m);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | f->map_[i];
  if (n > kMaxHeaderBytes) fail_file(path, cat("header length ", n, " exceeds the 100 MB limit"));
  if (n > f->size_ - 8) fail_file(path, cat("header length ", n, " runs past the end of the file (", f->size_, " bytes)"));
  std::string header(reinterpret_cast<const char*>(f->map_ + 8), n);
  f->data_ = f->map_ + 8 + n;
  parse_safetensors_header(header, f->size_ - 8 - n, path, f->tensors_, f->metadata_);
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->by_name_[f->tensors_[i].name] = i;
  f->live_views_.assign(f->tensors_.size(), 0);
  f->self_ = f;
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

const StTensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const StTensorInfo* info = find(name);
  if (!info) fail_file(path_, "no tensor named '" + name + "'");
  const uint8_t* src = data_ + info->begin;
  if (info->dtype == StDType::F8_E4M3 || info->dtype == StDType::F8_E5M2) {
    auto out = at::empty(info->shape, at::kFloat);
    float* dst = out.data_ptr<float>();
    bool e4m3 = info->dtype == StDType::F8_E4M3;
    for (int64_t i = 0; i < info->numel(); ++i) dst[i] = e4m3 ? decode_e4m3(src[i]) : decode_e5m2(src[i]);
    return out;
  }
  if (info->dtype == StDType::U16 || info->dtype == StDType::U32 || info->dtype == StDType::U64)
    fail_file(path_, cat("tensor '", name, "' has dtype ", st_dtype_name(info->dtype),
                         ", which moeforge cannot load (libtorch has no unsigned type wider than U8)"));
  at::ScalarType type = st_to_torch(info->dtype);
  int size = st_dtype_size(info->dtype);
  if (info->numel() == 0) return at::empty(info->shape, type);
  if (reinterpret_cast<uintptr_t>(src) % size == 0) {
    // Zero-copy view; the deleter keeps the mapping alive as long as the tensor lives.
    // Map the pages in one call rather than one fault per page on first use.
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
    long page = ::sysconf(_SC_PAGESIZE);
    uintptr_t b = reinterpret_cast<uintptr_t>(src) / page * page;
    ::madvise(reinterpret_cast<void*>(b), reinterpret_cast<uintptr_t>(src) + info->nbytes() - b, MADV_POPULATE_READ);
    auto keep = self_.lock();
    const size_t index = static_cast<size_t>(info - tensors_.data());
    {
      std::lock_guard<std::mutex> lock(views_mutex_);
      ++live_views_[index];
    }
    return at::from_blob(
        const_cast<uint8_t*>(src), info->shape, [keep, index](void*) { keep->release_view(index); },
        at::TensorOptions().dtype(type));
  }
  auto out = at::empty(info->shape, type);
  std::memcpy(out.data_ptr(), src, info->nbytes());
  return out;
}

at::Tensor SafetensorsFile::get(const std::string& name, at::ScalarType dtype) const {
  at::Tensor t = get(name);
  if (t.scalar_type() == dtype) return t;
  return t.to(dtype);  // the stored view dies here: release_view drops its pages
}

void SafetensorsFile::release_view(size_t index) const {
  {
    std::lock_guard<std::mutex> lock(views_mutex_);
    if (--live_views_[index] > 0) return;
  }
  // No view of the tensor is left: drop its whole pages from RSS. They are file-backed; pages a
  // view modified (copy-on-write) belonged to that view alone, and a later get faults the file's
  // bytes in again. Pages shared with a neighbouring tensor stay.
  const StTensorInfo& info = tensors_[index];
  const long page = ::sysconf(_SC_PAGESIZE);
  const uintptr_t b = reinterpret_cast<uintptr_t>(data_ + info.begin), e = reinterpret_cast<uintptr_t>(data_ + info.end);
  const uintptr_t pb = (b + page - 1) / page * page, pe = e / page * page;
  if (pe > pb) ::madvise(reinterpret_cast<void*>(pb), pe - pb, MADV_DONTNEED);
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  struct Entry {
    std::string name;
    at::Tensor t;
    StDType dtype;
  };
  std::vector<Entry> entries;
  entries.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail_file(path, "'__metadata__' is not a valid tensor name");
    if (!t.defined()) fail_file(path, "tensor '" + name + "' is undefined");
    entries.push_back({name, t, torch_to_st(t.scalar_type())});
  }
  // Reference order: descending dtype alignment, then name. Keeps every tensor aligned.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    int sa = st_dtype_size(a.dtype), sb = st_dtype_size(b.dtype);
    return sa != sb ? sa > sb : a.name < b.name;
  });
  for (size_t i = 1; i < entries.size(); ++i)
    if (entries[i].name == entries[i - 1].name) fail_file(path, "duplicate tensor name '" + entries[i].name + "'");

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  meta["format"] = "pt";
  for (const auto& [k, v] : metadata)
    if (k != "format") meta[k] = v;
  header["__metadata__"] = meta;
  uint64_t offset = 0;
  for (const auto& e : entries) {
    uint64_t nbytes = static_cast<uint64_t>(e.t.numel()) * st_dtype_size(e.dtype);
    header[e.name] = {{"dtype", st_dtype_name(e.dtype)},
                      {"shape", e.t.sizes().vec()},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));

  AtomicFile out(path);
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (const auto& e : entries) {
    // Separate contiguous CPU copy per tensor: tensors sharing storage are written twice.
    at::Tensor c = e.t.detach().to(at::kCPU).contiguous();
    out.write(c.data_ptr(), static_cast<size_t>(c.numel()) * st_dtype_size(e.dtype));
  }
  out.commit();
}

}  // namespace mf
