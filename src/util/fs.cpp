#include "util/fs.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/error.h"
#include "util/fs_checks.h"
#include "util/str.h"

namespace fs = std::filesystem;

namespace mf {

namespace {
std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  return ".tmp-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
}
std::string errno_text() { return std::strerror(errno); }
}  // namespace

bool path_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

uint64_t file_size(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail_file(path, "cannot stat: " + errno_text());
  return static_cast<uint64_t>(st.st_size);
}

std::string path_join(const std::string& a, const std::string& b) { return (fs::path(a) / b).string(); }
std::string parent_dir(const std::string& path) {
  auto p = fs::path(path).parent_path().string();
  return p.empty() ? "." : p;
}
std::string base_name(const std::string& path) { return fs::path(path).filename().string(); }

void require_regular_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) fail_file(path, "no such file");
    fail_file(path, "cannot stat: " + errno_text());
  }
  if (S_ISDIR(st.st_mode)) fail_file(path, "is a directory, expected a file");
  // Streams named as such are the user's deliberate choice (`--text <(zcat x.gz)`, /dev/stdin).
  const bool named_stream = starts_with(path, "/dev/fd/") || starts_with(path, "/proc/self/fd/") || path == "/dev/stdin";
  if (!S_ISREG(st.st_mode) && !named_stream) fail_file(path, "not a regular file");
}

std::string read_file(const std::string& path) {
  require_regular_file(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, path_exists(path) ? "cannot open for reading" : "no such file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail_file(path, "read error");
  return ss.str();
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  temp_ = path_ + unique_suffix();
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_file(path_, "cannot create: " + errno_text());
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_file(path_, "write failed: " + errno_text());
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    fd_ = -1;
    ::unlink(temp_.c_str());
    fail_file(path_, "write failed: " + errno_text());
  }
  fd_ = -1;
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    ::unlink(temp_.c_str());
    fail_file(path_, "cannot rename into place: " + errno_text());
  }
}

void write_file_atomic(const std::string& path, const std::string& content) {
  AtomicFile f(path);
  f.write(content.data(), content.size());
  f.commit();
}

// A file, FIFO or device the user has at an output path is never renamed away or deleted.
// Symbolic links are followed, as the user sees them: a link to a directory is replaced by the
// new output, its target left alone.
void refuse_non_directory_output(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  struct stat st;
  if (::stat(p.c_str(), &st) == 0 && !S_ISDIR(st.st_mode))
    fail_file(p, "exists and is not a directory (not overwritten)");
}

bool same_path(const std::string& a, const std::string& b) {
  char ra[PATH_MAX], rb[PATH_MAX];
  return realpath(a.c_str(), ra) && realpath(b.c_str(), rb) && std::string(ra) == rb;
}

void check_model_output_dir(const std::string& out, bool overwrite, const std::vector<std::string>& inputs) {
  refuse_non_directory_output(out);
  if (is_directory(out) && !list_dir(out).empty() && !overwrite)
    fail_file(out, "exists and is not empty (pass --overwrite to replace it)");
  for (const std::string& in : inputs)
    if (same_path(in, out)) fail_file(out, "is an input of this command; choose another output directory");
}

AtomicDir::AtomicDir(std::string path) : final_(std::move(path)) {
  while (!final_.empty() && final_.size() > 1 && final_.back() == '/') final_.pop_back();
  refuse_non_directory_output(final_);
  std::string parent = parent_dir(final_);
  if (!is_directory(parent)) make_dirs(parent);
  temp_ = final_ + unique_suffix();
  std::error_code ec;
  fs::create_directory(temp_, ec);
  if (ec) fail_file(final_, "cannot create output directory: " + ec.message());
}

AtomicDir::~AtomicDir() {
  if (!committed_) remove_all(temp_);
}

void AtomicDir::commit() {
  refuse_non_directory_output(final_);  // again: something may have appeared there meanwhile
  std::error_code ec;
  std::string old;
  if (fs::exists(final_, ec)) {
    old = final_ + unique_suffix();
    fs::rename(final_, old, ec);
    if (ec) fail_file(final_, "cannot replace existing output: " + ec.message());
  }
  fs::rename(temp_, final_, ec);
  if (ec) fail_file(final_, "cannot rename output into place: " + ec.message());
  committed_ = true;
  if (!old.empty()) remove_all(old);
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) fail_file(path, "cannot create directory: " + ec.message());
}

// Not std::filesystem::remove_all: a pip PyTorch's libtorch.so exports its own copy of it, which
// the dynamic linker prefers, and that copy crashes (a call through a null pointer) on any
// non-empty directory. nftw walks depth-first without following symbolic links.
void remove_all(const std::string& path) {
  auto remove_entry = [](const char* p, const struct stat*, int, struct FTW*) {
    ::remove(p);  // best effort, like remove_all(path, error_code&): keep walking
    return 0;
  };
  nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void copy_file(const std::string& from, const std::string& to) {
  std::string bytes = read_file(from);
  write_file_atomic(to, bytes);
}

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(path, ec)) out.push_back(e.path().filename().string());
  if (ec) fail_file(path, "cannot list directory: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace mf
