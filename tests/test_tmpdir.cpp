// ctest runs every test case as its own process, two at a time, and many tests keep fixtures
// under fixed names in ::testing::TempDir(). Give each process its own directory (gtest reads
// TEST_TMPDIR on every call) so parallel cases never share or delete each other's files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "util/fs.h"

namespace {

// Created and removed by the environment, so listing the tests (ctest's discovery) leaves nothing.
// Removal goes through mf::remove_all (see util/fs.cpp for why not std::filesystem's).
class PerProcessTempDir : public ::testing::Environment {
 public:
  PerProcessTempDir() {
    const char* base = std::getenv("TMPDIR");
    dir_ = std::string(base && *base ? base : "/tmp") + "/moeforge-tests-" + std::to_string(getpid());
    setenv("TEST_TMPDIR", dir_.c_str(), 1);
  }
  void SetUp() override { std::filesystem::create_directories(dir_); }  // not when only listing tests
  void TearDown() override {
    mf::remove_all(dir_);
  }

 private:
  std::string dir_;
};

::testing::Environment* const per_process_temp_dir = ::testing::AddGlobalTestEnvironment(new PerProcessTempDir);

}  // namespace

TEST(TestSetup, TempDirIsPerProcess) {
  EXPECT_NE(::testing::TempDir().find("moeforge-tests-" + std::to_string(getpid())), std::string::npos);
}
