// Request forming exactly as lm-eval does it, first on strings (context, continuation, gold), then on
// tokens (trailing-space move, joint tokenization split at len(context tokens), empty context -> prefix
// token, BOS policy), and the rolling windows of loglikelihood_rolling.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/task.h"

namespace mf::eval {

struct Request {
  std::string context;
  std::string continuation;
};

// Everything one document asks of the model and what is needed to score it.
struct Instance {
  int64_t doc_index = 0;
  std::string origin;             // "<file>:<line>"
  std::vector<Request> requests;  // multiple choice: one per choice; else exactly one
  int64_t gold = -1;              // multiple choice only
  std::vector<std::string> choices;  // the strings whose lengths normalise acc_norm / acc_bytes
  int64_t words = 0, bytes = 0;      // rolling only
  // str(doc_to_target(doc)) as lm-eval logs it: a gold index in decimal, else the target string.
  std::string target;
};

// Builds one instance; errors are "<file>:<line>: <what>" (missing field, gold out of range, ...).
Instance build_instance(const TaskDef& task, const Doc& doc, int64_t doc_index);
std::vector<Instance> build_instances(const TaskDef& task, const std::vector<Doc>& docs);

// The tokenizer as the evaluator needs it. encode() never adds special tokens.
struct TextEncoder {
  virtual ~TextEncoder() = default;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual int32_t bos_id() const = 0;  // -1: none
  virtual int32_t eos_id() const = 0;  // -1: none
  // Whether the HF tokenizer adds BOS by default (add_bos_token / post-processor): Llama yes, Qwen no.
  virtual bool default_add_bos() const { return false; }
};

// BOS policy: lm-eval <= 0.4.9 never added special tokens for causal models (off); >= 0.4.10 follows
// the tokenizer's default (auto); on forces BOS when the tokenizer has one.
enum class BosPolicy { Auto, On, Off };
BosPolicy parse_bos_policy(const std::string& text);  // "auto" | "on" | "off"
const char* bos_policy_name(BosPolicy p);

struct TokenRequest {
  std::vector<int32_t> context;
  std::vector<int32_t> continuation;
};

class RequestTokenizer {
 public:
  RequestTokenizer(const TextEncoder& encoder, BosPolicy policy);
  // lm-eval tok_encode(): encode + BOS by policy.
  std::vector<int32_t> tok_encode(const std::string& text) const;
  // lm-eval loglikelihood() request forming for one (context, continuation).
  TokenRequest encode_request(const Request& request) const;
  // BOS if the tokenizer has one, else EOS (lm-eval prefix_token_id).
  int32_t prefix_token() const;
  bool adds_bos() const { return add_bos_; }

 private:
  const TextEncoder& enc_;
  bool add_bos_;
  // The choices of a question share their context: encode it once.
  mutable std::string last_context_;
  mutable std::vector<int32_t> last_context_ids_;
  mutable bool have_last_ = false;
};

// lm-eval _encode_pair's trailing-whitespace move on strings: returns (context, continuation).
Request move_trailing_space(const Request& request);

// lm-eval get_rolling_token_windows(context_len=1) + make_disjoint_window: the (context, continuation)
// token pairs whose loglikelihoods sum to the document's.
std::vector<TokenRequest> rolling_windows(const std::vector<int32_t>& tokens, int32_t prefix_token,
                                          int64_t max_length);

}  // namespace mf::eval
