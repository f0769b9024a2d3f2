// Chat formats as code (no Jinja engine): Llama-3 and ChatML (Qwen, SmolLM, ...). The format
// is recognised from tokenizer_config.json's `chat_template` string.
#pragma once
#include <string>
#include <vector>

namespace mf {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

enum class ChatFormat { none, llama3, chatml };

struct ChatTemplate {
  ChatFormat format = ChatFormat::none;
  std::string bos_token;       // Llama-3 puts it at the start of the first message
  std::string default_system;  // ChatML: system message inserted when the first message is not one
  // Meta's first Llama-3 (base) template appends the assistant header unconditionally.
  bool always_generation_prompt = false;
};

// Recognises the format of a Jinja chat template; format none when it is neither.
ChatTemplate detect_chat_template(const std::string& jinja, const std::string& bos_token);
const char* chat_format_name(ChatFormat format);
// Renders `messages` exactly as the HF template would. Throws mf::Error for format none.
std::string render_chat(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt);

}  // namespace mf
