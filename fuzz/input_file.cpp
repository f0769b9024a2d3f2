#include <stdlib.h>
#include <unistd.h>

#include <fstream>

#include "fuzz_target.h"
#include "util/error.h"
#include "util/fs.h"

namespace mf::fuzz {

namespace {

std::string make_scratch_dir() {
  std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string templ = base + "/moeforge-fuzz-XXXXXX";
  if (!mkdtemp(templ.data())) fail("cannot create a scratch directory under " + base);
  return templ;
}

// Removed at exit so repeated runs leave nothing behind.
struct ScratchDir {
  std::string path = make_scratch_dir();
  ~ScratchDir() { remove_all(path); }
};

}  // namespace

std::string write_input(const uint8_t* data, size_t size, const std::string& name) {
  static ScratchDir dir;
  const std::string path = dir.path + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) fail("cannot write " + path);
  return path;
}

}  // namespace mf::fuzz
