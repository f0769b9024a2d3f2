#include "eval/engine.h"

#include <cstring>

#include <algorithm>
#include <map>
#include <memory>
#include <numeric>

#include "util/error.h"
#include "util/progress.h"

namespace mf::eval {

std::vector<std::vector<TokenScore>> LoglikelihoodModel::score_shared(const std::vector<SharedGroup>& groups) {
  std::vector<ScoreRow> rows;
  for (const auto& g : groups)
    for (const auto& c : g.continuations) {
      ScoreRow r;
      r.input = g.prefix;
      if (!c.empty()) r.input.insert(r.input.end(), c.begin(), c.end() - 1);
      r.targets = c;
      rows.push_back(std::move(r));
    }
  std::vector<TokenScore> flat = score(rows);
  std::vector<std::vector<TokenScore>> out;
  size_t k = 0;
  for (const auto& g : groups) {
    out.emplace_back(flat.begin() + static_cast<std::ptrdiff_t>(k),
                     flat.begin() + static_cast<std::ptrdiff_t>(k + g.continuations.size()));
    k += g.continuations.size();
  }
  return out;
}

ScoreRow make_row(const TokenRequest& request, int64_t max_length) {
  if (static_cast<int64_t>(request.continuation.size()) > max_length)
    fail("a continuation of " + std::to_string(request.continuation.size()) +
         " tokens is longer than the model's maximum length " + std::to_string(max_length));
  std::vector<int32_t> whole = request.context;
  whole.insert(whole.end(), request.continuation.begin(), request.continuation.end());
  const int64_t keep = std::min<int64_t>(static_cast<int64_t>(whole.size()), max_length + 1);
  ScoreRow row;
  row.input.assign(whole.end() - keep, whole.end() - 1);
  row.targets = request.continuation;
  return row;
}

namespace {

struct Unit {
  // Either one independent request (members.size() == 1, shared == false) or a shared group.
  bool shared = false;
  std::vector<size_t> members;
  int64_t length = 0;  // sort key: the row's tokens (context + continuation), or a group's packed tokens
};

}  // namespace

namespace {

// Every rank's scores into `results`: (index, logprob bits, greedy) records, all-gathered.
void gather_scores(std::vector<TokenScore>& results, const std::vector<size_t>& mine, const EngineOptions& options) {
  if (!options.all_gather) fail("internal: data-parallel scoring without an all-gather");
  struct Record {
    uint64_t index;
    double logprob;
    uint8_t greedy;
  };
  std::string bytes(mine.size() * sizeof(Record), '\0');
  for (size_t k = 0; k < mine.size(); ++k) {
    const Record r{mine[k], results[mine[k]].logprob, static_cast<uint8_t>(results[mine[k]].greedy)};
    std::memcpy(&bytes[k * sizeof(Record)], &r, sizeof(Record));
  }
  for (const std::string& from : options.all_gather(bytes)) {
    if (from.size() % sizeof(Record) != 0) fail("internal: malformed scores from another rank");
    for (size_t off = 0; off < from.size(); off += sizeof(Record)) {
      Record r;
      std::memcpy(&r, &from[off], sizeof(Record));
      if (r.index >= results.size()) fail("internal: malformed scores from another rank");
      results[r.index] = TokenScore{r.logprob, r.greedy != 0};
    }
  }
}

}  // namespace

std::vector<TokenScore> run_requests(LoglikelihoodModel& model, const std::vector<TokenRequest>& requests,
                                     const EngineOptions& options, EngineStats* stats_out) {
  EngineStats stats;
  stats.requests = static_cast<int64_t>(requests.size());
  const int64_t max_len = model.max_length();
  std::vector<TokenScore> results(requests.size());

  // Requests with nothing to score never reach the model (lm-eval: sum over no tokens = 0, greedy).
  std::vector<size_t> todo;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].continuation.empty()) results[i] = TokenScore{0.0, true};
    else todo.push_back(i);
  }
  if (todo.empty()) {
    if (stats_out) *stats_out = stats;
    return results;
  }
  for (size_t i : todo)
    if (requests[i].context.empty()) fail("internal: request with an empty token context");

  auto total_len = [&](size_t i) {
    return static_cast<int64_t>(requests[i].context.size() + requests[i].continuation.size());
  };
  auto fits = [&](size_t i) { return total_len(i) <= max_len + 1; };
  // Tokens a shared group costs the model: the context once plus every continuation's input tokens.
  auto packed_len = [&](const Unit& u) {
    int64_t n = static_cast<int64_t>(requests[u.members[0]].context.size());
    for (size_t m : u.members) n += static_cast<int64_t>(requests[m].continuation.size()) - 1;
    return n;
  };

  // Group by identical context tokens; only untruncated requests can share the context.
  std::vector<Unit> units;
  if (options.share_context) {
    std::map<std::vector<int32_t>, size_t> by_context;  // context -> unit index
    for (size_t i : todo) {
      if (!fits(i)) {
        units.push_back({false, {i}, total_len(i)});
        continue;
      }
      auto [it, inserted] = by_context.emplace(requests[i].context, units.size());
      if (inserted) units.push_back({true, {i}, 0});
      else units[it->second].members.push_back(i);
    }
    // A packed group may not exceed max_length tokens (contexts shared by many long continuations,
    // such as the prefix token of rolling windows, would otherwise make huge rows): split it.
    std::vector<Unit> split_units;
    for (auto& u : units) {
      if (!u.shared) {
        split_units.push_back(std::move(u));
        continue;
      }
      const int64_t ctx_len = static_cast<int64_t>(requests[u.members[0]].context.size());
      Unit cur{true, {}, 0};
      int64_t packed = ctx_len;
      for (size_t m : u.members) {
        const int64_t add = static_cast<int64_t>(requests[m].continuation.size()) - 1;
        if (!cur.members.empty() && packed + add > max_len) {
          split_units.push_back(std::move(cur));
          cur = Unit{true, {}, 0};
          packed = ctx_len;
        }
        cur.members.push_back(m);
        packed += add;
      }
      split_units.push_back(std::move(cur));
    }
    units = std::move(split_units);
    for (auto& u : units) {
      if (u.shared && u.members.size() == 1) {
        u.shared = false;
        u.length = total_len(u.members[0]);
      } else if (u.shared) {
        u.length = packed_len(u);
      }
    }
  } else {
    for (size_t i : todo) units.push_back({false, {i}, total_len(i)});
  }

  // Longest first; ties by the first member's tokens (lm-eval sorts by (-len, tokens)).
  std::stable_sort(units.begin(), units.end(), [&](const Unit& a, const Unit& b) {
    if (a.length != b.length) return a.length > b.length;
    const auto& ra = requests[a.members[0]];
    const auto& rb = requests[b.members[0]];
    if (ra.context != rb.context) return ra.context < rb.context;
    return ra.continuation < rb.continuation;
  });

  std::unique_ptr<Progress> bar;
  if (options.progress)
    bar = std::make_unique<Progress>(options.progress_label, static_cast<int64_t>(todo.size()), "req");

  // Data parallel: this rank scores every world_size-th batch and records what it scored.
  int64_t batch_index = -1;
  std::vector<size_t> mine;
  auto my_turn = [&]() { return ++batch_index % options.world_size == options.rank; };

  size_t pos = 0;
  while (pos < units.size()) {
    if (units[pos].shared) {
      // Pack consecutive shared groups: groups x longest packed group within the budget.
      std::vector<SharedGroup> batch;
      std::vector<const Unit*> batch_units;
      int64_t longest = 0;
      while (pos < units.size() && units[pos].shared) {
        const int64_t len = units[pos].length;
        const int64_t new_longest = std::max(longest, len);
        if (!batch.empty() && (new_longest * static_cast<int64_t>(batch.size() + 1) > options.batch_tokens ||
                               static_cast<int64_t>(batch.size()) >= options.max_batch_rows))
          break;
        SharedGroup g;
        g.prefix = requests[units[pos].members[0]].context;
        for (size_t m : units[pos].members) g.continuations.push_back(requests[m].continuation);
        batch.push_back(std::move(g));
        batch_units.push_back(&units[pos]);
        longest = new_longest;
        stats.input_tokens += len;
        ++pos;
      }
      int64_t done = 0;
      if (my_turn()) {
        auto out = model.score_shared(batch);
        if (out.size() != batch.size()) fail("internal: model returned a wrong number of group results");
        for (size_t g = 0; g < batch.size(); ++g) {
          if (out[g].size() != batch_units[g]->members.size())
            fail("internal: model returned a wrong number of continuation results");
          for (size_t k = 0; k < out[g].size(); ++k) {
            results[batch_units[g]->members[k]] = out[g][k];
            mine.push_back(batch_units[g]->members[k]);
          }
        }
      }
      for (const Unit* u : batch_units) done += static_cast<int64_t>(u->members.size());
      stats.groups += static_cast<int64_t>(batch.size());
      stats.padded_tokens += longest * static_cast<int64_t>(batch.size());
      ++stats.batches;
      if (bar) bar->advance(done);
    } else {
      std::vector<ScoreRow> rows;
      std::vector<size_t> ids;
      int64_t longest = 0;
      while (pos < units.size() && !units[pos].shared) {
        size_t i = units[pos].members[0];
        ScoreRow row = make_row(requests[i], max_len);
        int64_t len = static_cast<int64_t>(row.input.size());
        int64_t new_longest = std::max(longest, len);
        if (!rows.empty() && (new_longest * static_cast<int64_t>(rows.size() + 1) > options.batch_tokens ||
                              static_cast<int64_t>(rows.size()) >= options.max_batch_rows))
          break;
        if (!fits(i)) ++stats.truncated;
        longest = new_longest;
        stats.input_tokens += len;
        rows.push_back(std::move(row));
        ids.push_back(i);
        ++pos;
      }
      if (my_turn()) {
        auto out = model.score(rows);
        if (out.size() != rows.size()) fail("internal: model returned a wrong number of row results");
        for (size_t k = 0; k < out.size(); ++k) results[ids[k]] = out[k];
        mine.insert(mine.end(), ids.begin(), ids.end());
      }
      stats.rows += static_cast<int64_t>(rows.size());
      stats.padded_tokens += longest * static_cast<int64_t>(rows.size());
      ++stats.batches;
      if (bar) bar->advance(static_cast<int64_t>(rows.size()));
    }
  }
  if (bar) bar->finish();
  if (options.idle_forward) {
    // Batch j is rank j % W's: ranks below the remainder have one batch more than the others.
    const int64_t batches = batch_index + 1, W = options.world_size;
    const int64_t busiest = (batches + W - 1) / W, own = batches / W + (options.rank < batches % W ? 1 : 0);
    for (int64_t i = own; i < busiest; ++i) options.idle_forward();
  }
  if (options.world_size > 1) gather_scores(results, mine, options);
  if (stats_out) *stats_out = stats;
  return results;
}

}  // namespace mf::eval
