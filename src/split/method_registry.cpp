#include "split/method_registry.h"

#include <algorithm>

#include "util/error.h"
#include "util/str.h"

namespace mf {

Registry<SplitMethodEntry>& split_method_registry() {
  static Registry<SplitMethodEntry> r = [] {
    Registry<SplitMethodEntry> reg("split method");
    reg.add("random", random_split_method());
    reg.add("random-hetero", random_hetero_split_method());
    reg.add("moefication", moefication_split_method());
    reg.add("moefication-coact", moefication_coact_split_method());
    reg.add("emoe", emoe_split_method());
    reg.add("moebert", moebert_split_method());
    reg.add("moebert-multitask", moebert_multitask_split_method());
    reg.add("hemoe", hemoe_split_method());
    return reg;
  }();
  return r;
}

std::vector<std::string> split_method_names() { return split_method_registry().names(); }

std::string unknown_split_method_message(const std::string& name) {
  return cat("unknown split method '", name, "' (", join(split_method_names(), ", "), ")");
}

const SplitMethodEntry& split_method_at(const std::string& name) {
  const SplitMethodEntry* e = split_method_registry().find(name);
  if (!e) fail(unknown_split_method_message(name));
  return *e;
}

void require_rows(const at::Tensor& t, int64_t F, const std::string& method, const char* what) {
  if (!t.defined() || t.dim() < 1 || t.size(0) != F) fail(cat("split: method ", method, " needs ", what, " with ", F, " rows"));
}

}  // namespace mf
