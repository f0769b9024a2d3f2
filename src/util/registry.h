// One table per kind of component (model families, routers, expert banks, FFN blocks, split
// methods, training recipes, merge methods): name -> entry. The built-in entries are added in
// one place per kind (a `*_registry()` function, one line each); code outside the library (a
// test, a plugin) adds its own at run time with add(). Lookups of unknown names fail with one
// line that lists the known ones. Listings keep the order of registration (built-ins in the
// order their table adds them, then run-time additions).
#pragma once
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "util/error.h"

namespace mf {

template <class Entry>
class Registry {
 public:
  explicit Registry(std::string what) : what_(std::move(what)) {}

  // Adds an entry; a name that is already taken is an error (remove() it first to replace it).
  void add(const std::string& name, Entry entry) {
    if (name.empty()) fail(what_ + " registry: empty name");
    if (!entries_.emplace(name, std::move(entry)).second) fail(what_ + " \"" + name + "\" is already registered");
    order_.push_back(name);
  }
  void remove(const std::string& name) {
    if (entries_.erase(name)) order_.erase(std::find(order_.begin(), order_.end(), name));
  }
  const Entry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  // The entry, or mf::Error "unknown <what> "x" (known: a, b, c)".
  const Entry& at(const std::string& name) const {
    if (const Entry* e = find(name)) return *e;
    fail("unknown " + what_ + " \"" + name + "\" (known: " + known() + ")");
  }
  // In registration order.
  const std::vector<std::string>& names() const { return order_; }
  // "a, b, c"
  std::string known() const {
    std::string s;
    for (const auto& n : order_) s += (s.empty() ? "" : ", ") + n;
    return s;
  }
  const std::string& what() const { return what_; }

 private:
  std::string what_;
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;
};

}  // namespace mf
