#include "util/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28, _GNU_SOURCE)
#include <sys/stat.h>
#include <sys/types.h>
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
#include "util/log.h"
#include "util/str.h"

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)  // <linux/fs.h>; not included: it clashes with <sys/mount.h>
#endif

namespace fs = std::filesystem;

namespace mf {

namespace {
// Temporary names are `<final>.tmp-<pid>-<n>`: <pid> the writing process, <n> a per-process counter,
// both plain decimal. remove_stale_temporaries() recognizes exactly this form; keep the two in step.
// `<final>.previous-<pid>-<n>` holds an earlier output during a commit without RENAME_EXCHANGE: a
// complete output, so it is reported when left behind, never removed.
constexpr const char* kTempMarker = ".tmp-";
constexpr const char* kPreviousMarker = ".previous-";
std::string unique_suffix(const char* marker = kTempMarker) {
  static std::atomic<uint64_t> counter{0};
  return marker + std::to_string(getpid()) + "-" + std::to_string(counter++);
}
std::string errno_text() { return std::strerror(errno); }

// A decimal number as std::to_string writes one (no sign, no leading zero unless it is "0"), of
// at most `max_digits` digits, filling all of [s, end). Returns false otherwise.
bool parse_plain_decimal(const char* s, const char* end, size_t max_digits, uint64_t& value) {
  const size_t n = static_cast<size_t>(end - s);
  if (n == 0 || n > max_digits) return false;
  if (s[0] == '0' && n > 1) return false;
  value = 0;
  for (const char* c = s; c < end; ++c) {
    if (*c < '0' || *c > '9') return false;
    value = value * 10 + static_cast<uint64_t>(*c - '0');
  }
  return true;
}

// `rest` is what follows `<final>.tmp-` in a directory entry's name: the PID when it is exactly
// "<pid>-<n>" as unique_suffix() writes it, with 0 < pid <= INT_MAX; 0 otherwise.
pid_t temp_suffix_pid(const char* rest) {
  const char* dash = std::strchr(rest, '-');
  if (!dash) return 0;
  uint64_t pid = 0, n = 0;
  if (!parse_plain_decimal(rest, dash, 10, pid) || pid == 0 || pid > static_cast<uint64_t>(INT_MAX)) return 0;
  if (!parse_plain_decimal(dash + 1, dash + std::strlen(dash), 20, n)) return 0;
  return static_cast<pid_t>(pid);
}
}  // namespace

// Same-host assumption: a PID is only meaningful on the machine (and in the PID namespace) that
// wrote the temporary. Two hosts (or containers with separate PID namespaces) writing the same
// output on a shared filesystem could see each other's live temporaries as stale; moeforge does
// not support that setup. A PID that has since been reused by an unrelated process makes its
// leftover look alive: it is kept (the safe side) until that process ends.
void remove_stale_temporaries(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const std::string base = base_name(p);
  if (base.empty() || base == "." || base == ".." || base == "/") return;
  const std::string prefix = base + kTempMarker, previous_prefix = base + kPreviousMarker;
  const bool has_parent = !fs::path(p).parent_path().empty();
  const std::string parent = parent_dir(p);
  // Only a PID that names no process at all is dead; EPERM means alive (another user's run).
  auto dead = [](pid_t pid) { return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH; };
  DIR* d = ::opendir(parent.c_str());
  if (!d) return;  // best effort: creating the output reports a missing or unreadable directory
  std::vector<std::string> stale, previous;
  while (const struct dirent* e = ::readdir(d)) {
    const char* name = e->d_name;
    if (std::strncmp(name, prefix.c_str(), prefix.size()) == 0) {
      if (dead(temp_suffix_pid(name + prefix.size()))) stale.emplace_back(name);
    } else if (std::strncmp(name, previous_prefix.c_str(), previous_prefix.size()) == 0) {
      if (dead(temp_suffix_pid(name + previous_prefix.size()))) previous.emplace_back(name);
    }
  }
  ::closedir(d);
  for (const std::string& name : previous)
    log_warn("an interrupted run left an earlier output at ", has_parent ? path_join(parent, name) : name,
             " (kept: move it back to ", p, " or delete it)");
  for (const std::string& name : stale) {
    const std::string full = has_parent ? path_join(parent, name) : name;
    remove_all(full);
    struct stat st;
    if (::lstat(full.c_str(), &st) == 0)
      log_warn("cannot remove the leftover of an interrupted run: ", full);
    else
      log_info("removed the leftover of an interrupted run: ", full);
  }
}

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
  remove_stale_temporaries(path_);
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
  remove_stale_temporaries(final_);
  temp_ = final_ + unique_suffix();
  std::error_code ec;
  fs::create_directory(temp_, ec);
  if (ec) fail_file(final_, "cannot create output directory: " + ec.message());
}

AtomicDir::~AtomicDir() {
  if (!committed_) remove_all(temp_);
}

// The commit never leaves a moment where `final_` is missing: an existing output is swapped with the
// new one in one step (renameat2 RENAME_EXCHANGE), and only then is the old one, now under the
// temporary name, deleted. A kill during that deletion leaves a `<final>.tmp-<pid>-<n>` leftover,
// which the next AtomicDir for the same output removes. Filesystems without the exchange (some
// network and FUSE filesystems) get two renames, with a short window in between (see below).
void AtomicDir::commit() {
  refuse_non_directory_output(final_);  // again: something may have appeared there meanwhile
  struct stat st;
  if (::lstat(final_.c_str(), &st) == 0) {
    if (::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, final_.c_str(), RENAME_EXCHANGE) == 0) {
      // A user's file put there after the check above is swapped back, never deleted.
      if (!is_directory(temp_)) {
        if (::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, final_.c_str(), RENAME_EXCHANGE) != 0) {
          committed_ = true;  // temp_ holds the user's file now: the destructor must not remove it
          fail_file(final_, "appeared as a file during the commit and could not be put back: it is at " + temp_ +
                                " (" + errno_text() + ")");
        }
        fail_file(final_, "exists and is not a directory (not overwritten)");
      }
      committed_ = true;
      remove_all(temp_);  // the previous output
      return;
    }
    const int err = errno;
    if (err != EINVAL && err != ENOSYS && err != EOPNOTSUPP && err != ENOENT)
      fail_file(final_, "cannot replace existing output: " + std::string(std::strerror(err)));
    // ENOENT: the old output went away meanwhile; otherwise no exchange here: two renames below.
  }
  // Two renames. The earlier output waits under `<final>.previous-<pid>-<n>`, not a temporary
  // name: a kill between the renames leaves it complete there, and later runs report it rather
  // than remove it.
  std::error_code ec;
  std::string old;
  if (::lstat(final_.c_str(), &st) == 0) {
    old = final_ + unique_suffix(kPreviousMarker);
    fs::rename(final_, old, ec);
    if (ec) fail_file(final_, "cannot replace existing output: " + ec.message());
    if (!is_directory(old)) {  // a user's file that appeared after the check: put it back
      fs::rename(old, final_, ec);
      if (ec) fail_file(final_, "appeared as a file during the commit and could not be put back: it is at " + old +
                                    " (" + ec.message() + ")");
      fail_file(final_, "exists and is not a directory (not overwritten)");
    }
  }
  fs::rename(temp_, final_, ec);
  if (ec) {
    const std::string why = ec.message();
    if (!old.empty()) fs::rename(old, final_, ec);  // the earlier output back in place
    fail_file(final_, "cannot rename output into place: " + why);
  }
  committed_ = true;
  if (old.empty()) return;
  // Deleted under a temporary name, so that a kill midway leaves a leftover that is cleaned up
  // rather than a partial "earlier output" that is reported.
  const std::string doomed = final_ + unique_suffix();
  fs::rename(old, doomed, ec);
  remove_all(ec ? old : doomed);
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
