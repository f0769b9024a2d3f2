#include "tokenizer/chat_template.h"

#include "util/error.h"

namespace mf {
namespace {

// Jinja's `trim` filter: Python str.strip() (whitespace at both ends).
std::string py_strip(const std::string& s) {
  auto is_ws = [](unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  size_t b = 0, e = s.size();
  while (b < e && is_ws(s[b])) ++b;
  while (e > b && is_ws(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool contains(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

}  // namespace

const char* chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::llama3: return "llama3";
    case ChatFormat::chatml: return "chatml";
    default: return "none";
  }
}

ChatTemplate detect_chat_template(const std::string& jinja, const std::string& bos_token) {
  ChatTemplate t;
  t.bos_token = bos_token;
  if (contains(jinja, "<|start_header_id|>") && contains(jinja, "<|eot_id|>")) {
    t.format = ChatFormat::llama3;
    t.always_generation_prompt = !contains(jinja, "add_generation_prompt");
  } else if (contains(jinja, "<|im_start|>") && contains(jinja, "<|im_end|>")) {
    t.format = ChatFormat::chatml;
    // Qwen templates insert a default system turn; plain ChatML (SmolLM, ...) does not.
    if (contains(jinja, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."))
      t.default_system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
    else if (contains(jinja, "You are a helpful assistant."))
      t.default_system = "You are a helpful assistant.";
  }
  return t;
}

std::string render_chat(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  std::string out;
  switch (tmpl.format) {
    case ChatFormat::llama3:
      // Meta's template: BOS, then per message a header, the stripped content and <|eot_id|>.
      for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0) out += tmpl.bos_token;
        out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" +
               py_strip(messages[i].content) + "<|eot_id|>";
      }
      if (add_generation_prompt || tmpl.always_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    case ChatFormat::chatml:
      if (!tmpl.default_system.empty() && (messages.empty() || messages[0].role != "system"))
        out += "<|im_start|>system\n" + tmpl.default_system + "<|im_end|>\n";
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    default:
      fail("tokenizer has no known chat format (tokenizer_config.json chat_template is missing or is "
           "neither Llama-3 nor ChatML)");
  }
}

}  // namespace mf
