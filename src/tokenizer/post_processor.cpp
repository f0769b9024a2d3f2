#include "tokenizer/post_processor.h"

#include "util/error.h"
#include "util/str.h"

namespace mf {
namespace {

using nlohmann::json;

class AffixProcessor : public PostProcessor {
 public:
  AffixProcessor(std::vector<int32_t> prefix, std::vector<int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  }
  bool adds_tokens() const override { return !prefix_.empty() || !suffix_.empty(); }
  std::vector<int32_t> prefix() const override { return prefix_; }
  std::vector<int32_t> suffix() const override { return suffix_; }

 private:
  std::vector<int32_t> prefix_, suffix_;
};

class ProcessorSequence : public PostProcessor {
 public:
  explicit ProcessorSequence(std::vector<std::unique_ptr<PostProcessor>> items) : items_(std::move(items)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& p : items_) p->process(ids);
  }
  bool adds_tokens() const override {
    for (const auto& p : items_)
      if (p->adds_tokens()) return true;
    return false;
  }
  std::vector<int32_t> prefix() const override {
    std::vector<int32_t> out;
    for (const auto& p : items_) {
      auto x = p->prefix();
      out.insert(out.begin(), x.begin(), x.end());
    }
    return out;
  }
  std::vector<int32_t> suffix() const override {
    std::vector<int32_t> out;
    for (const auto& p : items_) {
      auto x = p->suffix();
      out.insert(out.end(), x.begin(), x.end());
    }
    return out;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> items_;
};

// "[CLS]", 101 pairs of Bert/RobertaProcessing.
int32_t pair_id(const json& j, const char* key, const std::string& origin) {
  if (!j.contains(key) || !j[key].is_array() || j[key].size() != 2 || !j[key][1].is_number_integer())
    fail_file(origin, cat("post_processor: '", key, "' must be [token, id]"));
  return j[key][1].get<int32_t>();
}

std::unique_ptr<PostProcessor> make_template(const json& j, const std::string& origin) {
  if (!j.contains("single") || !j["single"].is_array())
    fail_file(origin, "post_processor TemplateProcessing: missing array 'single'");
  const json specials = j.contains("special_tokens") && j["special_tokens"].is_object() ? j["special_tokens"] : json::object();
  auto special_ids = [&](const std::string& name) {
    if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
      fail_file(origin, cat("post_processor TemplateProcessing: special token '", name, "' is not defined"));
    std::vector<int32_t> ids;
    for (const auto& v : specials[name]["ids"]) {
      if (!v.is_number_integer()) fail_file(origin, cat("post_processor: ids of '", name, "' must be integers"));
      ids.push_back(v.get<int32_t>());
    }
    return ids;
  };
  std::vector<int32_t> prefix, suffix;
  bool seen_sequence = false;
  for (const auto& item : j["single"]) {
    std::string special;
    if (item.is_object() && item.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    if (item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].contains("id") &&
        item["SpecialToken"]["id"].is_string()) {
      special = item["SpecialToken"]["id"].get<std::string>();
    } else if (item.is_string()) {  // short form "$A" / "<s>" / "<s>:0"
      std::string s = item.get<std::string>();
      if (!s.empty() && s[0] == '$') {
        seen_sequence = true;
        continue;
      }
      special = s.substr(0, s.rfind(':') == std::string::npos ? s.size() : s.rfind(':'));
    } else {
      fail_file(origin, "post_processor TemplateProcessing: bad item in 'single'");
    }
    auto ids = special_ids(special);
    auto& dst = seen_sequence ? suffix : prefix;
    dst.insert(dst.end(), ids.begin(), ids.end());
  }
  return std::make_unique<AffixProcessor>(prefix, suffix);
}

}  // namespace

std::unique_ptr<PostProcessor> make_affix_processor(std::vector<int32_t> prefix, std::vector<int32_t> suffix) {
  return std::make_unique<AffixProcessor>(std::move(prefix), std::move(suffix));
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& origin) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail_file(origin, "post_processor must be an object with a 'type'");
  const std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return std::make_unique<AffixProcessor>(std::vector<int32_t>{}, std::vector<int32_t>{});
  if (type == "TemplateProcessing") return make_template(j, origin);
  if (type == "BertProcessing" || type == "RobertaProcessing")
    return std::make_unique<AffixProcessor>(std::vector<int32_t>{pair_id(j, "cls", origin)},
                                            std::vector<int32_t>{pair_id(j, "sep", origin)});
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array())
      fail_file(origin, "post_processor Sequence: missing array 'processors'");
    std::vector<std::unique_ptr<PostProcessor>> items;
    for (const auto& item : j["processors"])
      if (auto p = make_post_processor(item, origin)) items.push_back(std::move(p));
    return std::make_unique<ProcessorSequence>(std::move(items));
  }
  fail_file(origin, cat("unsupported post_processor type '", type, "'"));
}

}  // namespace mf
