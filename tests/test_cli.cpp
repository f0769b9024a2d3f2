// End-to-end tests of the moeforge binary: exit codes and the one-line error contract.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <string>
#include <sys/wait.h>

namespace {

struct Run {
  int code;
  std::string out;  // stdout + stderr
};

Run run(const std::string& args) {
  std::string cmd = std::string(MOEFORGE_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace

TEST(Cli, HelpExitsZero) {
  auto r = run("--help");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("Usage: moeforge"), std::string::npos) << r.out;
}

TEST(Cli, VersionExitsZero) {
  auto r = run("--version");
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out.rfind("moeforge ", 0), 0u) << r.out;
}

TEST(Cli, UnknownCommandIsUsageError) {
  auto r = run("frobnicate");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.out.rfind("error: unknown command 'frobnicate'\n", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("--help"), std::string::npos);
}

TEST(Cli, NoCommandIsUsageError) {
  auto r = run("");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.out.rfind("error: ", 0), 0u) << r.out;
}

TEST(Cli, BadGlobalOptionIsUsageError) {
  auto r = run("--threads=-3 --help");
  EXPECT_EQ(r.code, 2) << r.out;
}
