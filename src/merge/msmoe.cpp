#include "merge/msmoe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "util/error.h"
#include "util/str.h"

namespace mf::merge {

std::vector<int64_t> most_frequent(const std::vector<double>& freq, int64_t count) {
  std::vector<int64_t> order(freq.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return freq[a] > freq[b]; });
  order.resize(static_cast<size_t>(std::clamp<int64_t>(count, 0, static_cast<int64_t>(freq.size()))));
  return order;
}

GlobalAllocation global_allocation(const std::vector<std::vector<double>>& freq, int64_t r, int64_t min_groups) {
  if (freq.empty()) fail("m-smoe: no layer to allocate groups to");
  const int64_t n = static_cast<int64_t>(freq.front().size());
  for (const std::vector<double>& f : freq)
    if (static_cast<int64_t>(f.size()) != n) fail("m-smoe: layers with different expert counts");
  if (r < 1 || r > n) fail(cat("m-smoe: cannot keep ", r, " of ", n, " experts per layer"));
  const int64_t lo = std::clamp<int64_t>(min_groups, 1, n);
  std::vector<double> all;
  for (const std::vector<double>& f : freq) all.insert(all.end(), f.begin(), f.end());
  std::sort(all.begin(), all.end(), std::greater<double>());
  GlobalAllocation out;
  const size_t index = static_cast<size_t>(r) * freq.size();
  out.threshold = index < all.size() ? all[index] : -std::numeric_limits<double>::infinity();
  for (const std::vector<double>& f : freq) {
    int64_t count = 0;
    for (double v : f) count += v > out.threshold ? 1 : 0;
    if (count < lo) ++out.raised;
    out.counts.push_back(std::max(count, lo));
  }
  return out;
}

DominantGroups group_by_dominants(const std::vector<double>& freq, const std::vector<double>& similarity, int64_t n,
                                  int64_t groups, int64_t group_limit) {
  if (n < 1 || static_cast<int64_t>(freq.size()) != n || static_cast<int64_t>(similarity.size()) != n * n)
    fail(cat("m-smoe: ", freq.size(), " frequencies and ", similarity.size(), " similarities for ", n, " experts"));
  if (groups < 1 || groups > n) fail(cat("m-smoe: cannot form ", groups, " groups of ", n, " experts"));
  if (group_limit < 1 || groups * group_limit < n)
    fail(cat("m-smoe: ", groups, " groups of at most ", group_limit, " experts cannot hold ", n, " experts"));
  const std::vector<int64_t> cores = most_frequent(freq, groups);  // group g's dominant expert is cores[g]
  std::vector<double> S = similarity;
  std::vector<int64_t> group_of(static_cast<size_t>(n), -1);
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(groups));  // dominant first, then in joining order
  for (int64_t g = 0; g < groups; ++g) {
    group_of[cores[g]] = g;
    members[g].push_back(cores[g]);
  }
  constexpr double kBanned = -100.0;
  auto most_similar = [&](int64_t e) {
    int64_t best = 0;
    for (int64_t g = 1; g < groups; ++g)
      if (S[e * n + cores[g]] > S[e * n + cores[best]]) best = g;
    return best;
  };
  DominantGroups out;
  for (int64_t i = 0; i < n; ++i) {
    if (group_of[i] >= 0) continue;
    int64_t g = most_similar(i);
    group_of[i] = g;
    members[g].push_back(i);
    while (static_cast<int64_t>(members[g].size()) > group_limit) {
      const int64_t c = cores[g];
      size_t pos = 1;
      for (size_t p = 2; p < members[g].size(); ++p)
        if (S[c * n + members[g][p]] < S[c * n + members[g][pos]]) pos = p;
      const int64_t u = members[g][pos];
      members[g].erase(members[g].begin() + static_cast<std::ptrdiff_t>(pos));
      S[u * n + c] = S[c * n + u] = kBanned;
      ++out.moved;
      g = most_similar(u);
      if (S[u * n + cores[g]] <= kBanned) {
        // Every dominant expert is banned for u: the most similar group with room.
        int64_t best = -1;
        for (int64_t h = 0; h < groups; ++h)
          if (static_cast<int64_t>(members[h].size()) < group_limit &&
              (best < 0 || similarity[u * n + cores[h]] > similarity[u * n + cores[best]]))
            best = h;
        g = best;  // exists: fewer than n experts are placed and groups · group_limit ≥ n
      }
      group_of[u] = g;
      members[g].push_back(u);
    }
  }
  // Groups numbered by their lowest member.
  std::vector<int64_t> relabel(static_cast<size_t>(groups), -1);
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i)
    if (relabel[group_of[i]] < 0) relabel[group_of[i]] = next++;
  out.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.labels[i] = relabel[group_of[i]];
  out.dominant.assign(static_cast<size_t>(groups), -1);
  for (int64_t g = 0; g < groups; ++g) out.dominant[relabel[g]] = cores[g];
  return out;
}

}  // namespace mf::merge
