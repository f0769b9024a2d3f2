#include "split/split.h"

#include "split/method_registry.h"
#include "util/error.h"
#include "util/str.h"

namespace mf {

Partition split_layer(const SplitInputs& in, const SplitOptions& opt, SplitReport* report) {
  SplitReport local;
  SplitReport& rep = report ? *report : local;
  const SplitMethodEntry* method = split_method_registry().find(opt.method);
  if (!method) fail("split: " + unknown_split_method_message(opt.method));
  if (!method->run) fail(cat("split: method ", opt.method, " has no run function"));
  const int N = opt.num_experts;
  const int64_t F = in.num_neurons;
  if (F <= 0) fail("split: the layer has no neurons");
  if (N <= 0 || N > F) fail(cat("split: cannot make ", N, " experts from ", F, " neurons"));
  Partition p = method->run(in, opt, rep);
  // Callers index experts 0..N-1 over F neurons; a method (e.g. one added at run time) that
  // returns another shape would otherwise fail far from its cause.
  if (p.num_experts() != N || p.num_neurons != F)
    fail(cat("split: method ", opt.method, " returned ", p.num_experts(), " experts over ", p.num_neurons,
             " neurons, expected ", N, " over ", F));
  rep.cover = validate(p);
  return p;
}

}  // namespace mf
