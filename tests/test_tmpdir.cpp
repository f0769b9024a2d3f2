// ctest runs every test case as its own process, two at a time, and many tests keep fixtures
// under fixed names in ::testing::TempDir(). Give each process its own directory (gtest reads
// TEST_TMPDIR on every call) so parallel cases never share or delete each other's files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace {

struct PerProcessTempDir {
  std::string dir;
  PerProcessTempDir() {
    const char* base = std::getenv("TMPDIR");
    dir = std::string(base && *base ? base : "/tmp") + "/moeforge-tests-" + std::to_string(getpid());
    std::filesystem::create_directories(dir);
    setenv("TEST_TMPDIR", dir.c_str(), 1);
  }
  ~PerProcessTempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
};

const PerProcessTempDir per_process_temp_dir;

}  // namespace

TEST(TestSetup, TempDirIsPerProcess) {
  EXPECT_NE(::testing::TempDir().find("moeforge-tests-" + std::to_string(getpid())), std::string::npos);
}
