#include "eval/requests.h"

#include "eval/text.h"
#include "util/error.h"

namespace mf::eval {

namespace {

Instance build_unchecked(const TaskDef& task, const Doc& doc, int64_t doc_index) {
  Instance inst;
  inst.doc_index = doc_index;
  inst.origin = doc.origin();
  json processed;
  const json* d = &doc.value;
  if (task.process_doc) {
    processed = task.process_doc(doc.value);
    d = &processed;
  }
  switch (task.output_type) {
    case OutputType::MultipleChoice: {
      TextOrIndex text = task.doc_to_text(*d);
      std::vector<std::string> choices = task.doc_to_choice(*d);
      if (choices.empty()) fail("no choices");
      if (text.is_index) {
        // Multiple input: the choices are contexts, the target is the shared continuation.
        TextOrIndex target = task.doc_to_target(*d);
        if (target.is_index) fail("doc_to_target must be a string when doc_to_text is an index");
        inst.target = target.text;
        for (const auto& c : choices)
          inst.requests.push_back({task.description + c, task.target_delimiter + target.text});
        inst.gold = text.index;
      } else {
        const std::string ctx = task.description + text.text;
        for (const auto& c : choices) inst.requests.push_back({ctx, task.target_delimiter + c});
        TextOrIndex target = task.doc_to_target(*d);
        if (target.is_index) {
          inst.gold = target.index;
          inst.target = std::to_string(target.index);
        } else {
          // lm-eval: choices.index(target), the first equal choice.
          inst.gold = -1;
          for (size_t i = 0; i < choices.size() && inst.gold < 0; ++i)
            if (choices[i] == target.text) inst.gold = static_cast<int64_t>(i);
          if (inst.gold < 0) fail("target '" + target.text + "' is not one of the choices");
          inst.target = target.text;
        }
      }
      if (inst.gold < 0 || inst.gold >= static_cast<int64_t>(choices.size()))
        fail("gold index " + std::to_string(inst.gold) + " out of range for " + std::to_string(choices.size()) +
             " choices");
      inst.choices = std::move(choices);
      break;
    }
    case OutputType::Loglikelihood: {
      TextOrIndex text = task.doc_to_text(*d);
      TextOrIndex target = task.doc_to_target(*d);
      if (text.is_index || target.is_index) fail("loglikelihood tasks need string context and target");
      inst.requests.push_back({task.description + text.text, target.text});
      inst.target = target.text;
      break;
    }
    case OutputType::LoglikelihoodRolling: {
      TextOrIndex target = task.doc_to_target(*d);
      if (target.is_index) fail("loglikelihood_rolling tasks need a string target");
      inst.requests.push_back({"", target.text});
      inst.target = target.text;
      if (task.doc_to_counts) {
        auto [w, b] = task.doc_to_counts(*d);
        inst.words = w;
        inst.bytes = b;
      } else {
        inst.words = count_regex_split_ws(target.text);
        inst.bytes = static_cast<int64_t>(target.text.size());
      }
      break;
    }
  }
  return inst;
}

}  // namespace

Instance build_instance(const TaskDef& task, const Doc& doc, int64_t doc_index) {
  try {
    return build_unchecked(task, doc, doc_index);
  } catch (const Error& e) {
    fail(doc.origin() + ": " + one_line(e.what()));
  } catch (const json::exception& e) {
    fail(doc.origin() + ": " + one_line(e.what()));
  }
}

std::vector<Instance> build_instances(const TaskDef& task, const std::vector<Doc>& docs) {
  std::vector<Instance> out;
  out.reserve(docs.size());
  for (size_t i = 0; i < docs.size(); ++i) out.push_back(build_instance(task, docs[i], static_cast<int64_t>(i)));
  return out;
}

BosPolicy parse_bos_policy(const std::string& text) {
  if (text == "auto") return BosPolicy::Auto;
  if (text == "on") return BosPolicy::On;
  if (text == "off") return BosPolicy::Off;
  throw UsageError("--bos must be auto, on or off (got '" + text + "')");
}

const char* bos_policy_name(BosPolicy p) {
  switch (p) {
    case BosPolicy::Auto: return "auto";
    case BosPolicy::On: return "on";
    case BosPolicy::Off: return "off";
  }
  return "?";
}

RequestTokenizer::RequestTokenizer(const TextEncoder& encoder, BosPolicy policy) : enc_(encoder) {
  bool want = policy == BosPolicy::On || (policy == BosPolicy::Auto && encoder.default_add_bos());
  add_bos_ = want && encoder.bos_id() >= 0;
}

std::vector<int32_t> RequestTokenizer::tok_encode(const std::string& text) const {
  std::vector<int32_t> ids = enc_.encode(text);
  if (add_bos_) ids.insert(ids.begin(), enc_.bos_id());
  return ids;
}

int32_t RequestTokenizer::prefix_token() const {
  if (enc_.bos_id() >= 0) return enc_.bos_id();
  if (enc_.eos_id() >= 0) return enc_.eos_id();
  fail("tokenizer has neither a BOS nor an EOS token to condition an empty context on");
}

Request move_trailing_space(const Request& r) {
  std::string ctx = py_rstrip(r.context);
  size_t n = r.context.size() - ctx.size();
  if (n == 0) return r;
  return {ctx, r.context.substr(ctx.size()) + r.continuation};
}

TokenRequest RequestTokenizer::encode_request(const Request& request) const {
  TokenRequest out;
  if (request.context.empty()) {
    // lm-eval: condition on the prefix token; when the encoding already starts with it (BOS added by
    // policy) that token becomes the context instead of being doubled.
    std::vector<int32_t> cont = tok_encode(request.continuation);
    const int32_t prefix = prefix_token();
    if (!cont.empty() && cont.front() == prefix) {
      out.context.assign(cont.begin(), cont.begin() + 1);
      out.continuation.assign(cont.begin() + 1, cont.end());
    } else {
      out.context = {prefix};
      out.continuation = std::move(cont);
    }
    return out;
  }
  Request moved = move_trailing_space(request);
  std::vector<int32_t> whole = tok_encode(moved.context + moved.continuation);
  if (!have_last_ || last_context_ != moved.context) {
    last_context_ids_ = tok_encode(moved.context);
    last_context_ = moved.context;
    have_last_ = true;
  }
  out.context = last_context_ids_;
  size_t n = std::min(out.context.size(), whole.size());
  // A whitespace-only context encodes to nothing after the move; condition on the prefix token then
  // (lm-eval would build a malformed row).
  if (out.context.empty()) out.context = {prefix_token()};
  out.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(n), whole.end());
  return out;
}

std::vector<TokenRequest> rolling_windows(const std::vector<int32_t>& tokens, int32_t prefix_token,
                                          int64_t max_length) {
  std::vector<TokenRequest> out;
  if (tokens.empty()) return out;
  if (max_length < 1) fail("max_length must be >= 1");
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t pred_len = max_length;  // max_seq_len - context_len + 1 with context_len = 1
  // First window predicts its tokens from the prefix token onwards.
  const int64_t first = std::min<int64_t>(max_length, n);
  {
    TokenRequest w;
    w.context = {prefix_token};
    w.context.insert(w.context.end(), tokens.begin(), tokens.begin() + (first - 1));
    w.continuation.assign(tokens.begin(), tokens.begin() + first);
    // make_disjoint_window: context keeps len(a) - (len(b) - 1) tokens.
    w.context.resize(w.context.size() - (w.continuation.size() - 1));
    out.push_back(std::move(w));
  }
  int64_t predicted = first;
  while (predicted < n) {
    const int64_t window_pred = std::min(n - predicted, pred_len);
    const int64_t end = predicted + window_pred;
    TokenRequest w;
    w.context.assign(tokens.begin() + (end - max_length - 1), tokens.begin() + (end - 1));
    w.continuation.assign(tokens.begin() + (end - window_pred), tokens.begin() + end);
    w.context.resize(w.context.size() - (w.continuation.size() - 1));
    out.push_back(std::move(w));
    predicted += window_pred;
  }
  return out;
}

}  // namespace mf::eval
