#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/str.h"

namespace mf {
namespace {

// One JIT stack and match context per thread: a pcre2_code is shared, these are not.
struct ThreadMatchState {
  pcre2_jit_stack* stack = nullptr;
  pcre2_match_context* context = nullptr;
  ThreadMatchState() {
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    context = pcre2_match_context_create(nullptr);
    if (stack && context) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatchState() {
    if (context) pcre2_match_context_free(context);
    if (stack) pcre2_jit_stack_free(stack);
  }
};

ThreadMatchState& thread_state() {
  thread_local ThreadMatchState state;
  return state;
}

struct MatchData {
  pcre2_match_data* md;
  explicit MatchData(const pcre2_code* code) : md(pcre2_match_data_create_from_pattern(code, nullptr)) {}
  ~MatchData() { pcre2_match_data_free(md); }
};

}  // namespace

Regex::Regex(const std::string& pattern, bool literal) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);  // LITERAL rejects UCP
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &err,
                                   &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    fail(cat("invalid regex '", pattern, "': ", reinterpret_cast<const char*>(buf), " at offset ", offset));
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(const std::string& text, std::vector<std::pair<size_t, size_t>>& out) const {
  out.clear();
  const auto* code = static_cast<const pcre2_code*>(code_);
  MatchData data(code);
  ThreadMatchState& ts = thread_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    int rc;
    if (jit_) {
      rc = pcre2_jit_match(code, subject, text.size(), pos, 0, data.md, ts.context);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // pathological input: fall back to the interpreter
        rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_JIT | PCRE2_NO_UTF_CHECK, data.md, nullptr);
    } else {
      rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, data.md, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(rc, buf, sizeof buf);
      const bool limit = rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT;
      fail(cat("regex '", pattern_, "' failed on this input: ", reinterpret_cast<const char*>(buf),
               limit ? " (catastrophic backtracking: rewrite the pattern)" : ""));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.md);
    size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(b, e);
      pos = e;
    } else {
      // Empty match: step over one character (never split inside a UTF-8 sequence).
      if (b >= text.size()) break;
      pos = b + unicode::utf8_len(static_cast<unsigned char>(text[b]));
    }
  }
}

std::string Regex::replace_all(const std::string& text, const std::string& with) const {
  std::vector<std::pair<size_t, size_t>> m;
  find_all(text, m);
  if (m.empty()) return text;
  std::string out;
  size_t last = 0;
  for (auto [b, e] : m) {
    out.append(text, last, b - last);
    out += with;
    last = e;
  }
  out.append(text, last, std::string::npos);
  return out;
}

}  // namespace mf
