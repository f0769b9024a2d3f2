// HF tokenizers post-processors for a single sequence (what encode(text, add_special_tokens=True)
// adds): TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel (ids unchanged), Sequence.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mf {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids) const = 0;
  // Whether it adds any ids (ByteLevel does not).
  virtual bool adds_tokens() const = 0;
  // The ids it puts before / after the sequence (for bos/eos detection).
  virtual std::vector<int32_t> prefix() const = 0;
  virtual std::vector<int32_t> suffix() const = 0;
};

std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const std::string& origin);
// Adds fixed ids before and after (tokenizer_config add_bos_token / add_eos_token).
std::unique_ptr<PostProcessor> make_affix_processor(std::vector<int32_t> prefix, std::vector<int32_t> suffix);

}  // namespace mf
