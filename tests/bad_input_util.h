// Helpers of the bad-input tests (test_bad_input*.cpp): fresh directories, malformed files, CLI
// runs with a time bound, and the one-line-error / nothing-changed checks.
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <map>
#include <string>
#include <vector>

#include "eval/jsonl.h"
#include "eval/yaml_task.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/size_limits.h"
#include "model_fixtures.h"
#include "test_helpers.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/str.h"

using namespace mf;
using mf::testing_helpers::CliRun;
using mf::testing_helpers::error_of;

namespace mf::bad_input {

inline std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/mf_bad_input/" + name;
  remove_all(d);
  make_dirs(d);
  return d;
}

// `levels` nested arrays around nothing: [[[...]]].
inline std::string nested(size_t levels) { return std::string(levels, '[') + std::string(levels, ']'); }

// `moeforge -q ARGS`, stdout and stderr merged, killed after 60 s (exit 124) rather than hanging.
// `env`: variable assignments for the command ("MOEFORGE_MAX_MEMORY=64MiB").
inline CliRun run_bounded(const std::string& args, const std::string& env = "") {
  return mf::testing_helpers::run_moeforge("-q " + args, true, (env.empty() ? "" : env + " ") + "timeout 60 ");
}

// The mf::Error message of f(), run on another thread. A call still blocked (on opening or reading
// the FIFO) after 5 s fails the test and is then released by opening and closing the FIFO's write
// end, so a regression shows as a failure, not as a hung test binary.
inline std::string error_without_blocking(const std::string& fifo, const std::function<void()>& f) {
  auto result = std::async(std::launch::async, [&f] { return error_of(f); });
  if (result.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    ADD_FAILURE() << "blocked on the FIFO " << fifo;
    while (result.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
      const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0) ::close(fd);
    }
  }
  return result.get();
}

// A safetensors header of `n` one-byte U8 tensors t000000, t000001, ... laid end to end; the last
// one is named `last_name` when given.
inline std::string many_tensors_header(size_t n, const std::string& last_name = "") {
  std::string h = "{";
  h.reserve(n * 70);
  char name[32], entry[160];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(name, sizeof name, "t%06zu", i);
    const std::string key = i + 1 == n && !last_name.empty() ? last_name : std::string(name);
    std::snprintf(entry, sizeof entry, "%s\"%s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%zu,%zu]}",
                  i ? "," : "", key.c_str(), i, i + 1);
    h += entry;
  }
  return h + "}";
}

// 8-byte little-endian header length + header + data.
inline std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

inline const char* kNotOverwritten = ": exists and is not a directory (not overwritten)";

inline std::string source_model(const std::string& name) { return std::string(MOEFORGE_SOURCE_DIR) + "/models/" + name; }

// A model directory `dir` (made fresh) with the small files of models/<name> copied and its
// model.safetensors linked (or copied, when it is to be edited); `edit` changes config.json.
inline std::string model_copy(const std::string& name, const std::string& dir_name,
                       const std::function<void(json&)>& edit = nullptr, bool copy_weights = false) {
  const std::string src = source_model(name), dir = fresh_dir(dir_name);
  for (const std::string f : {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    if (path_exists(src + "/" + f)) copy_file(src + "/" + f, dir + "/" + f);
  if (copy_weights) {
    copy_file(src + "/model.safetensors", dir + "/model.safetensors");
  } else {
    EXPECT_EQ(::symlink((src + "/model.safetensors").c_str(), (dir + "/model.safetensors").c_str()), 0);
  }
  if (edit) {
    json cfg = read_json_file(dir + "/config.json");
    edit(cfg);
    write_json_file(dir + "/config.json", cfg);
  }
  return dir;
}

// What the files under `dir` are: contents of small files, size and modification time of large
// ones, the target of links. Equal before and after a refused command: nothing was touched.
inline std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& name : list_dir(dir)) {
    const std::string p = dir + "/" + name;
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      std::array<char, 4096> buf{};
      const ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size() - 1);
      out[name] = "link " + std::string(buf.data(), n > 0 ? static_cast<size_t>(n) : 0);
    } else if (S_ISDIR(st.st_mode)) {
      for (const auto& [sub, what] : snapshot(p)) out[name + "/" + sub] = what;
    } else if (st.st_size < (1 << 20)) {
      out[name] = read_file(p);
    } else {
      out[name] = cat("size ", st.st_size, " mtime ", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
    }
  }
  return out;
}

// A refused command: exit `code`, exactly one line starting "error: " that starts with
// "error: " + `start` and holds `part`; exit 1 prints nothing else, a usage error (2) only adds
// the pointer to --help.
inline void expect_refused(const CliRun& r, int code, const std::string& start, const std::string& part = "") {
  EXPECT_EQ(r.code, code) << r.out;
  std::vector<std::string> lines;
  for (const auto& l : split(r.out, '\n'))
    if (!l.empty()) lines.push_back(l);
  std::vector<std::string> errors;
  for (const auto& l : lines)
    if (starts_with(l, "error: ")) errors.push_back(l);
  ASSERT_EQ(errors.size(), 1u) << r.out;
  EXPECT_EQ(errors[0].rfind("error: " + start, 0), 0u) << r.out;
  if (!part.empty()) EXPECT_NE(errors[0].find(part), std::string::npos) << r.out;
  if (code == 2) {
    EXPECT_EQ(lines, (std::vector<std::string>{errors[0], "Run 'moeforge --help' for usage."})) << r.out;
  } else {
    EXPECT_EQ(lines.size(), 1u) << r.out;
  }
  EXPECT_EQ(r.out.find("internal:"), std::string::npos) << r.out;
}

// A pretrain recipe config (from scratch) at `path` with the model section `model`.
inline void write_pretrain_config(const std::string& path, const json& model, const std::string& train_file,
                           const std::string& out_dir) {
  json cfg = {{"model", model},
              {"training",
               {{"seq_len", 16},
                {"batch_size", 2},
                {"max_steps", 1},
                {"lr", 0.001},
                {"train_data", json::array({train_file})},
                {"tokenizer", source_model("tiny")},
                {"output_dir", out_dir}}}};
  write_json_file(path, cfg);
}

// A small Llama model section for pretrain configs.
inline json llama_section(int64_t hidden, int64_t layers, int64_t vocab) {
  return {{"hidden_size", hidden},       {"intermediate_size", 2 * hidden}, {"num_hidden_layers", layers},
          {"num_attention_heads", 4},    {"vocab_size", vocab}};
}

}  // namespace mf::bad_input
