// File helpers. Outputs are never half-written: write to a temporary name in the target
// directory, then rename over the final name.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mf {

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
uint64_t file_size(const std::string& path);
std::string path_join(const std::string& a, const std::string& b);
std::string parent_dir(const std::string& path);
std::string base_name(const std::string& path);

// Whole file as bytes; mf::Error "<path>: ..." on failure.
std::string read_file(const std::string& path);
// Writes `content` to path atomically (temp + fsync + rename).
void write_file_atomic(const std::string& path, const std::string& content);

// A file being written: opened under a unique temporary name next to `path`;
// commit() renames it into place, destruction without commit() removes it.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t n);
  void commit();
  const std::string& temp_path() const { return temp_; }

 private:
  std::string path_, temp_;
  int fd_ = -1;
};

// An output directory built under a temporary name and renamed into place by commit().
// An existing target is replaced only at commit time.
class AtomicDir {
 public:
  explicit AtomicDir(std::string path);
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;
  const std::string& path() const { return temp_; }  // where to write now
  void commit();

 private:
  std::string final_, temp_;
  bool committed_ = false;
};

void make_dirs(const std::string& path);
void remove_all(const std::string& path);
void copy_file(const std::string& from, const std::string& to);
std::vector<std::string> list_dir(const std::string& path);

}  // namespace mf
