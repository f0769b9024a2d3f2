// The torchrun environment (RANK, WORLD_SIZE, ...), the timeout and free ports (dist.h).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "dist/dist.h"
#include "util/error.h"
#include "util/str.h"

namespace mf::dist {

std::optional<std::string> env_var(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

namespace {

[[noreturn]] void bad_env(const std::string& what) { throw Error("torchrun environment: " + what); }

// torchrun writes plain decimal integers.
int64_t parse_count(const char* name, const std::string& text) {
  int64_t v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || p != end || v < 0) bad_env(cat(name, "='", text, "' is not a non-negative integer"));
  return v;
}

}  // namespace

DistEnv env_from_torchrun() {
  DistEnv env;
  const auto world = env_var("WORLD_SIZE");
  if (!world) return env;
  env.world_size = parse_count("WORLD_SIZE", *world);
  if (env.world_size < 1) bad_env(cat("WORLD_SIZE=", env.world_size, " must be at least 1"));

  const auto rank = env_var("RANK");
  if (rank) {
    env.rank = parse_count("RANK", *rank);
  } else if (env.world_size > 1) {
    bad_env(cat("WORLD_SIZE=", env.world_size, " is set but RANK is not"));
  }
  if (env.rank >= env.world_size) bad_env(cat("RANK=", env.rank, " is not below WORLD_SIZE=", env.world_size));

  const auto local_rank = env_var("LOCAL_RANK");
  env.local_rank = local_rank ? parse_count("LOCAL_RANK", *local_rank) : env.rank;
  if (const auto local_world = env_var("LOCAL_WORLD_SIZE")) {
    const int64_t lw = parse_count("LOCAL_WORLD_SIZE", *local_world);
    if (local_rank && env.local_rank >= lw)
      bad_env(cat("LOCAL_RANK=", env.local_rank, " is not below LOCAL_WORLD_SIZE=", lw));
  }

  if (const auto addr = env_var("MASTER_ADDR")) env.master_addr = *addr;
  if (const auto port = env_var("MASTER_PORT")) {
    const char* end = port->data() + port->size();
    int64_t p = -1;
    auto [ptr, ec] = std::from_chars(port->data(), end, p);
    if (ec != std::errc() || ptr != end || p < 1 || p > 65535)
      bad_env(cat("MASTER_PORT='", *port, "' is not a port number (1-65535)"));
    env.master_port = static_cast<int>(p);
  }
  return env;
}

std::chrono::milliseconds default_timeout() {
  const auto v = env_var("MOEFORGE_DIST_TIMEOUT");
  if (!v) return std::chrono::seconds(300);
  double seconds = 0;
  size_t used = 0;
  try {
    seconds = std::stod(*v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v->size() || !std::isfinite(seconds) || seconds <= 0 || seconds > 1e9)
    fail(cat("MOEFORGE_DIST_TIMEOUT='", *v, "' is not a positive number of seconds"));
  return std::chrono::milliseconds(std::max<int64_t>(1, std::llround(seconds * 1000.0)));
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail(cat("cannot open a socket to find a free port: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    fail(cat("cannot find a free port: ", std::strerror(err)));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace mf::dist
