// Random splits (HeterExpert Split/random_split): a uniform expert draw per neuron, then the
// surplus of every oversize expert goes to a shuffled pool that fills the undersize experts.
#include <algorithm>
#include <numeric>

#include "split/method_registry.h"
#include "split/split.h"
#include "util/error.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

std::vector<int64_t> equal_sizes(int64_t F, int n) {
  if (n <= 0 || F < n) fail(cat("split: cannot make ", n, " non-empty experts from ", F, " neurons"));
  std::vector<int64_t> s(n, F / n);
  for (int j = 0; j < F % n; ++j) ++s[j];
  return s;
}

Partition split_random(int64_t F, const std::vector<int64_t>& sizes, uint64_t seed) {
  int n = static_cast<int>(sizes.size());
  if (n == 0) fail("split: random split needs at least one expert");
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0) fail("split: negative target expert size");
    total += s;
  }
  if (total != F) fail(cat("split: target expert sizes sum to ", total, ", layer has ", F, " neurons"));
  Rng rng(seed);
  std::vector<std::vector<int32_t>> members(n);
  for (int64_t i = 0; i < F; ++i) members[rng.below(n)].push_back(static_cast<int32_t>(i));
  return repair_to_sizes(std::move(members), sizes, F, rng);
}

Partition repair_to_sizes(std::vector<std::vector<int32_t>> members, const std::vector<int64_t>& sizes, int64_t F,
                          Rng& rng) {
  const int n = static_cast<int>(members.size());
  std::vector<int32_t> pool;
  for (int j = 0; j < n; ++j) {
    auto& m = members[j];
    while (static_cast<int64_t>(m.size()) > sizes[j]) {  // move a random surplus neuron
      size_t r = rng.below(m.size());
      pool.push_back(m[r]);
      m[r] = m.back();
      m.pop_back();
    }
  }
  for (size_t i = pool.size(); i > 1; --i) std::swap(pool[i - 1], pool[rng.below(i)]);
  size_t next = 0;
  for (int j = 0; j < n; ++j)
    while (static_cast<int64_t>(members[j].size()) < sizes[j]) members[j].push_back(pool[next++]);
  Partition p;
  p.num_neurons = F;
  for (auto& m : members) std::sort(m.begin(), m.end());
  p.experts = std::move(members);
  return p;
}

SplitMethodEntry random_split_method() {
  SplitMethodEntry e;
  e.description = "uniform random partition, sizes F/N (remainder to the first experts)";
  e.run = [](const SplitInputs& in, const SplitOptions& opt, SplitReport&) {
    return split_random(in.num_neurons, equal_sizes(in.num_neurons, opt.num_experts), opt.seed);
  };
  return e;
}

// The heterogeneous-random baseline: the same draw with another split's sizes (e.g. hemoe's).
SplitMethodEntry random_hetero_split_method() {
  SplitMethodEntry e;
  e.description = "random partition with the expert sizes of --sizes-from's part files";
  e.sizes_from_part_files = true;
  e.run = [](const SplitInputs& in, const SplitOptions& opt, SplitReport&) {
    if (static_cast<int>(in.target_sizes.size()) != opt.num_experts)
      fail(cat("split: random-hetero needs ", opt.num_experts, " target sizes, got ", in.target_sizes.size()));
    return split_random(in.num_neurons, in.target_sizes, opt.seed);
  };
  return e;
}

}  // namespace mf
