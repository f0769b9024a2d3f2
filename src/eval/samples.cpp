#include "eval/samples.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "util/error.h"
#include "util/hash.h"

namespace mf::eval {

using oj = nlohmann::ordered_json;

std::string py_float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);  // shortest round trip
  std::string s(buf, res.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  const size_t epos = s.find('e');
  const int exp = std::stoi(s.substr(epos + 1));
  std::string digits;
  for (size_t i = 0; i < epos; ++i)
    if (s[i] != '.') digits += s[i];
  // float_repr_style 'short': fixed notation for -4 <= exponent < 16.
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return sign + "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    const size_t int_len = static_cast<size_t>(exp) + 1;
    if (digits.size() <= int_len) return sign + digits + std::string(int_len - digits.size(), '0') + ".0";
    return sign + digits.substr(0, int_len) + "." + digits.substr(int_len);
  }
  std::string mant = digits.substr(0, 1);
  if (digits.size() > 1) mant += "." + digits.substr(1);
  char e[16];
  std::snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return sign + mant + e;
}

namespace {

// json.encoder.py_encode_basestring (ensure_ascii=False).
void dump_string(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char u[8];
          std::snprintf(u, sizeof u, "\\u%04x", c);
          out += u;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void dump(const oj& v, int indent, int level, std::string& out) {
  const bool pretty = indent >= 0;
  auto newline = [&](int lvl) {
    out += '\n';
    out.append(static_cast<size_t>(indent * lvl), ' ');
  };
  switch (v.type()) {
    case oj::value_t::null: out += "null"; break;
    case oj::value_t::boolean: out += v.get<bool>() ? "true" : "false"; break;
    case oj::value_t::number_integer: out += std::to_string(v.get<int64_t>()); break;
    case oj::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); break;
    case oj::value_t::number_float: {
      const double d = v.get<double>();
      if (std::isnan(d)) out += "NaN";
      else if (std::isinf(d)) out += d > 0 ? "Infinity" : "-Infinity";
      else out += py_float_repr(d);
      break;
    }
    case oj::value_t::string: dump_string(v.get_ref<const std::string&>(), out); break;
    case oj::value_t::array: {
      if (v.empty()) {
        out += "[]";
        break;
      }
      out += '[';
      bool first = true;
      for (const auto& e : v) {
        if (!first) out += pretty ? "," : ", ";
        first = false;
        if (pretty) newline(level + 1);
        dump(e, indent, level + 1, out);
      }
      if (pretty) newline(level);
      out += ']';
      break;
    }
    case oj::value_t::object: {
      if (v.empty()) {
        out += "{}";
        break;
      }
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += pretty ? "," : ", ";
        first = false;
        if (pretty) newline(level + 1);
        dump_string(it.key(), out);
        out += ": ";
        dump(it.value(), indent, level + 1, out);
      }
      if (pretty) newline(level);
      out += '}';
      break;
    }
    default: out += "null"; break;
  }
}

// The order in which lm-eval's ConfigurableTask.process_results() returns the per-document metrics.
int metric_rank(const std::string& name) {
  static const char* kOrder[] = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "acc",
                                 "f1", "mcc", "acc_norm", "acc_bytes", "exact_match"};
  for (size_t i = 0; i < sizeof kOrder / sizeof kOrder[0]; ++i)
    if (name == kOrder[i]) return static_cast<int>(i);
  return 100;
}

std::string py_bool(bool b) { return b ? "True" : "False"; }

}  // namespace

std::string py_json_dumps(const oj& value, int indent) {
  std::string out;
  dump(value, indent, 0, out);
  return out;
}

std::vector<std::string> sample_lines(const TaskDef& task, const std::vector<Doc>& docs,
                                      const std::vector<Instance>& instances,
                                      const std::vector<std::vector<TokenScore>>& scores,
                                      const std::vector<MetricItems>& items, std::string* task_hash) {
  if (docs.size() != instances.size() || scores.size() != instances.size())
    fail("internal: sample records need one document, instance and score list per document");
  // Metric columns in lm-eval's order (loglikelihood: perplexity, acc; multiple choice: acc, ...).
  std::vector<size_t> order(items.size());
  for (size_t m = 0; m < items.size(); ++m) order[m] = m;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return metric_rank(items[a].spec.name) < metric_rank(items[b].spec.name);
  });
  const bool rolling = task.output_type == OutputType::LoglikelihoodRolling;
  std::vector<std::string> lines;
  lines.reserve(instances.size());
  std::string hashes;
  for (size_t d = 0; d < instances.size(); ++d) {
    const Instance& inst = instances[d];
    const auto& sc = scores[d];
    oj doc = task.log_doc ? task.log_doc(docs[d]) : doc_in_file_order(docs[d]);
    oj args = oj::object(), resps = oj::array(), filtered = oj::array();
    for (size_t r = 0; r < inst.requests.size(); ++r) {
      const Request& req = inst.requests[r];
      oj a = oj::object();
      if (rolling) {
        a["arg_0"] = req.continuation;  // lm-eval: arguments = (doc_to_target(doc),)
        resps.push_back(oj::array({oj::array({py_float_repr(sc[r].logprob)})}));
        filtered.push_back(py_float_repr(sc[r].logprob));
      } else {
        a["arg_0"] = req.context;
        a["arg_1"] = req.continuation;
        oj pair = oj::array({py_float_repr(sc[r].logprob), py_bool(sc[r].greedy)});
        resps.push_back(oj::array({pair}));
        filtered.push_back(pair);
      }
      args["gen_args_" + std::to_string(r)] = a;
    }
    oj metric_names = oj::array();
    for (size_t m : order) metric_names.push_back(items[m].spec.name);
    const std::string& prompt = rolling ? inst.requests.at(0).continuation : inst.requests.at(0).context;
    const std::string doc_hash = sha256_hex(py_json_dumps(doc, 2));
    const std::string prompt_hash = sha256_hex(prompt);
    const std::string target_hash = sha256_hex(inst.target);
    hashes += doc_hash + prompt_hash + target_hash;

    oj line = oj::object();
    line["doc_id"] = static_cast<int64_t>(d);
    line["doc"] = std::move(doc);
    line["target"] = inst.target;
    line["arguments"] = std::move(args);
    line["resps"] = std::move(resps);
    line["filtered_resps"] = std::move(filtered);
    line["filter"] = "none";
    line["metrics"] = std::move(metric_names);
    line["doc_hash"] = doc_hash;
    line["prompt_hash"] = prompt_hash;
    line["target_hash"] = target_hash;
    for (size_t m : order) {
      const MetricItems& it = items[m];
      const std::string& name = it.spec.name;
      const double v = it.values.at(d);
      if (rolling) {
        // (loglikelihood, words) / (loglikelihood, bytes)
        line[name] = oj::array({v, static_cast<int64_t>(it.weights.at(d))});
      } else if (name == "exact_match" || (name == "acc" && task.output_type == OutputType::Loglikelihood)) {
        line[name] = static_cast<int64_t>(v);  // lm-eval: int(is_greedy)
      } else {
        line[name] = v;
      }
    }
    lines.push_back(py_json_dumps(line));
  }
  if (task_hash) *task_hash = sha256_hex(hashes);
  return lines;
}

std::string lm_eval_date_id(double unix_seconds) {
  double whole = std::floor(unix_seconds);
  int64_t micros = static_cast<int64_t>(std::llround((unix_seconds - whole) * 1e6));
  if (micros >= 1000000) {
    whole += 1;
    micros -= 1000000;
  }
  const std::time_t t = static_cast<std::time_t>(whole);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec);
  std::string out = buf;
  if (micros != 0) {
    std::snprintf(buf, sizeof buf, ".%06lld", static_cast<long long>(micros));
    out += buf;
  }
  return out;
}

}  // namespace mf::eval
