#include "eval/template.h"

#include <algorithm>
#include <cctype>

#include "eval/text.h"
#include "util/error.h"
#include "util/str.h"

namespace mf::eval {

using json = nlohmann::json;

namespace {

std::string py_repr(const json& v);

std::string py_repr_str(const std::string& s) {
  // Python picks single quotes unless the string has a single quote and no double quote.
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    if (c == q || c == '\\') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  out += q;
  return out;
}

std::string py_repr(const json& v) {
  if (v.is_string()) return py_repr_str(v.get<std::string>());
  if (v.is_array()) {
    std::vector<std::string> parts;
    for (const auto& e : v) parts.push_back(py_repr(e));
    return "[" + join(parts, ", ") + "]";
  }
  if (v.is_object()) {
    std::vector<std::string> parts;
    for (auto it = v.begin(); it != v.end(); ++it) parts.push_back(py_repr_str(it.key()) + ": " + py_repr(it.value()));
    return "{" + join(parts, ", ") + "}";
  }
  return template_to_string(v);
}

class Parser {
 public:
  Parser(const std::string& src, const json& doc) : s_(src), doc_(doc) {}

  json parse_all() {
    json v = expr();
    ws();
    if (p_ != s_.size()) err("unexpected '" + s_.substr(p_) + "'");
    return v;
  }

 private:
  [[noreturn]] void err(const std::string& what) const { fail("template {{" + s_ + "}}: " + what); }
  void ws() {
    while (p_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[p_]))) ++p_;
  }
  bool eat(char c) {
    ws();
    if (p_ < s_.size() && s_[p_] == c) {
      ++p_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) err(std::string("expected '") + c + "'");
  }
  std::string ident() {
    ws();
    size_t b = p_;
    while (p_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[p_])) || s_[p_] == '_')) ++p_;
    if (b == p_) err("expected a name at '" + s_.substr(b) + "'");
    return s_.substr(b, p_ - b);
  }

  json expr() {
    json v = unary();
    while (true) {
      if (eat('+')) {
        json r = unary();
        if (v.is_number_integer() && r.is_number_integer()) v = v.get<int64_t>() + r.get<int64_t>();
        else if (v.is_string() && r.is_string()) v = v.get<std::string>() + r.get<std::string>();
        else if (v.is_array() && r.is_array()) {
          for (const auto& e : r) v.push_back(e);
        } else err("'+' needs two numbers, strings or lists");
      } else if (eat('-')) {
        json r = unary();
        if (!v.is_number_integer() || !r.is_number_integer()) err("'-' needs two integers");
        v = v.get<int64_t>() - r.get<int64_t>();
      } else {
        return v;
      }
    }
  }

  json unary() {
    if (eat('-')) {
      json v = unary();
      if (!v.is_number_integer()) err("unary '-' needs an integer");
      return -v.get<int64_t>();
    }
    json v = postfix();
    while (eat('|')) v = filter(v);
    return v;
  }

  std::vector<json> args() {
    std::vector<json> out;
    if (eat(')')) return out;
    do out.push_back(expr());
    while (eat(','));
    expect(')');
    return out;
  }

  static int64_t norm_index(int64_t i, int64_t n) { return i < 0 ? i + n : i; }

  json filter(const json& v) {
    std::string name = ident();
    std::vector<json> a;
    if (eat('(')) a = args();
    if (name == "int") {
      if (v.is_number_integer()) return v;
      if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
      if (v.is_number_float()) return static_cast<int64_t>(v.get<double>());
      if (v.is_string()) {
        std::string t = py_strip(v.get<std::string>());
        try {
          size_t used = 0;
          long long x = std::stoll(t, &used);
          if (used == t.size()) return x;
        } catch (...) {
        }
        return 0;  // Jinja's int filter falls back to 0
      }
      err("|int on a " + std::string(v.type_name()));
    }
    if (name == "string") return template_to_string(v);
    if (name == "lower" || name == "upper") {
      std::string t = as_string(v, name);
      for (char& c : t) c = static_cast<char>(name == "lower" ? std::tolower(static_cast<unsigned char>(c))
                                                             : std::toupper(static_cast<unsigned char>(c)));
      return t;
    }
    if (name == "trim") return py_strip(as_string(v, name));
    if (name == "join") {
      if (!v.is_array()) err("|join needs a list");
      std::string sep = a.empty() ? "" : as_string(a[0], "join");
      std::vector<std::string> parts;
      for (const auto& e : v) parts.push_back(template_to_string(e));
      return join(parts, sep);
    }
    if (name == "first" || name == "last") {
      if (!v.is_array() || v.empty()) err("|" + name + " needs a non-empty list");
      return name == "first" ? v.front() : v.back();
    }
    if (name == "length") {
      if (v.is_string()) return utf8_length(v.get<std::string>());
      if (v.is_array() || v.is_object()) return static_cast<int64_t>(v.size());
      err("|length needs a string or list");
    }
    if (name == "replace") {
      if (a.size() != 2) err("|replace needs 2 arguments");
      return replace_all(as_string(v, name), as_string(a[0], name), as_string(a[1], name));
    }
    err("unknown filter '" + name + "'");
  }

  std::string as_string(const json& v, const std::string& what) {
    if (!v.is_string()) err(what + " needs a string, got " + std::string(v.type_name()));
    return v.get<std::string>();
  }

  json method(const json& v, const std::string& name, const std::vector<json>& a) {
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      std::string t = as_string(v, name + "()");
      return name == "strip" ? py_strip(t) : name == "lstrip" ? py_lstrip(t) : py_rstrip(t);
    }
    if (name == "lower" || name == "upper") return filter_by_name(v, name);
    if (name == "split") {
      std::string t = as_string(v, "split()");
      std::vector<std::string> parts = a.empty() ? py_split_ws(t) : py_split(t, as_string(a[0], "split()"));
      return parts;
    }
    if (name == "replace") {
      if (a.size() != 2) err("replace() needs 2 arguments");
      return replace_all(as_string(v, name), as_string(a[0], name), as_string(a[1], name));
    }
    if (name == "index") {
      if (a.size() != 1) err("index() needs 1 argument");
      if (v.is_array()) {
        for (size_t i = 0; i < v.size(); ++i)
          if (v[i] == a[0]) return static_cast<int64_t>(i);
        err(template_to_string(a[0]) + " is not in list");
      }
      std::string t = as_string(v, "index()");
      size_t pos = t.find(as_string(a[0], "index()"));
      if (pos == std::string::npos) err("substring not found");
      return static_cast<int64_t>(pos);
    }
    err("unknown method '" + name + "()'");
  }

  json filter_by_name(const json& v, const std::string& name) {
    std::string t = as_string(v, name + "()");
    for (char& c : t) c = static_cast<char>(name == "lower" ? std::tolower(static_cast<unsigned char>(c))
                                                           : std::toupper(static_cast<unsigned char>(c)));
    return t;
  }

  json member(const json& v, const std::string& key) {
    if (!v.is_object()) err("'" + key + "' of a " + std::string(v.type_name()));
    auto it = v.find(key);
    if (it == v.end()) fail("missing field '" + key + "'");
    return *it;
  }

  json postfix() {
    json v = primary();
    while (true) {
      if (eat('.')) {
        std::string name = ident();
        if (eat('(')) v = method(v, name, args());
        else v = member(v, name);
      } else if (eat('[')) {
        // index or slice
        json lo, hi;
        bool slice = false;
        ws();
        if (p_ < s_.size() && s_[p_] != ':') lo = expr();
        if (eat(':')) {
          slice = true;
          ws();
          if (p_ < s_.size() && s_[p_] != ']') hi = expr();
        }
        expect(']');
        if (!slice) {
          if (lo.is_string()) {
            v = member(v, lo.get<std::string>());
            continue;
          }
          if (!lo.is_number_integer()) err("index must be an integer");
          int64_t n = v.is_string() ? static_cast<int64_t>(v.get<std::string>().size()) : static_cast<int64_t>(v.size());
          if (!v.is_array() && !v.is_string()) err("cannot index a " + std::string(v.type_name()));
          int64_t i = norm_index(lo.get<int64_t>(), n);
          if (i < 0 || i >= n) err("index " + std::to_string(lo.get<int64_t>()) + " out of range");
          v = v.is_string() ? json(v.get<std::string>().substr(static_cast<size_t>(i), 1)) : json(v[static_cast<size_t>(i)]);
        } else {
          if (!v.is_array() && !v.is_string()) err("cannot slice a " + std::string(v.type_name()));
          int64_t n = v.is_string() ? static_cast<int64_t>(v.get<std::string>().size()) : static_cast<int64_t>(v.size());
          int64_t a = lo.is_null() ? 0 : norm_index(lo.get<int64_t>(), n);
          int64_t b = hi.is_null() ? n : norm_index(hi.get<int64_t>(), n);
          a = std::clamp<int64_t>(a, 0, n);
          b = std::clamp<int64_t>(b, 0, n);
          if (b < a) b = a;
          if (v.is_string()) v = v.get<std::string>().substr(static_cast<size_t>(a), static_cast<size_t>(b - a));
          else {
            json out = json::array();
            for (int64_t i = a; i < b; ++i) out.push_back(v[static_cast<size_t>(i)]);
            v = out;
          }
        }
      } else {
        return v;
      }
    }
  }

  json primary() {
    ws();
    if (p_ >= s_.size()) err("unexpected end");
    char c = s_[p_];
    if (c == '(') {
      ++p_;
      json v = expr();
      expect(')');
      return v;
    }
    if (c == '[') {
      ++p_;
      json out = json::array();
      if (eat(']')) return out;
      do out.push_back(expr());
      while (eat(','));
      expect(']');
      return out;
    }
    if (c == '\'' || c == '"') {
      ++p_;
      std::string t;
      while (p_ < s_.size() && s_[p_] != c) {
        if (s_[p_] == '\\' && p_ + 1 < s_.size()) {
          char e = s_[++p_];
          t += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        } else {
          t += s_[p_];
        }
        ++p_;
      }
      if (p_ >= s_.size()) err("unterminated string");
      ++p_;
      return t;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t b = p_;
      while (p_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[p_]))) ++p_;
      if (p_ - b > 18) err("integer " + s_.substr(b, p_ - b) + " is too large");  // std::stoll would throw
      return std::stoll(s_.substr(b, p_ - b));
    }
    std::string name = ident();
    if (name == "true" || name == "True") return true;
    if (name == "false" || name == "False") return false;
    return member(doc_, name);
  }

  const std::string& s_;
  const json& doc_;
  size_t p_ = 0;
};

}  // namespace

std::string template_to_string(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_null()) return "None";
  if (v.is_number_float()) return v.dump();
  return py_repr(v);
}

json render_template(const std::string& tmpl, const json& doc) {
  std::string out;
  size_t pos = 0;
  int pieces = 0;
  json single;
  bool only_expr = true;
  while (pos < tmpl.size()) {
    size_t open = tmpl.find("{{", pos);
    if (open == std::string::npos) {
      out += tmpl.substr(pos);
      only_expr = false;
      break;
    }
    if (open > pos) only_expr = false;
    out += tmpl.substr(pos, open - pos);
    size_t close = tmpl.find("}}", open + 2);
    if (close == std::string::npos) fail("template '" + one_line(tmpl) + "': unclosed '{{'");
    std::string src = tmpl.substr(open + 2, close - open - 2);
    Parser parser(src, doc);
    json v = parser.parse_all();
    ++pieces;
    single = v;
    out += template_to_string(v);
    pos = close + 2;
  }
  if (only_expr && pieces == 1) return single;
  return out;
}

}  // namespace mf::eval
