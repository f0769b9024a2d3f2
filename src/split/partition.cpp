#include "split/partition.h"

#include <algorithm>

#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf {

std::vector<int64_t> Partition::sizes() const {
  std::vector<int64_t> s;
  for (const auto& e : experts) s.push_back(static_cast<int64_t>(e.size()));
  return s;
}

Partition Partition::from_labels(const std::vector<int32_t>& labels, int num_experts) {
  Partition p;
  p.num_neurons = static_cast<int64_t>(labels.size());
  p.experts.assign(num_experts, {});
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_experts)
      fail(cat("partition: neuron ", i, " has expert ", labels[i], ", expected 0..", num_experts - 1));
    p.experts[labels[i]].push_back(static_cast<int32_t>(i));
  }
  return p;
}

std::vector<int32_t> Partition::labels() const {
  std::vector<int32_t> lab(num_neurons, -1);
  for (int j = 0; j < num_experts(); ++j)
    for (int32_t n : experts[j]) {
      if (n < 0 || n >= num_neurons) fail(cat("partition: neuron id ", n, " out of range"));
      if (lab[n] >= 0) fail(cat("partition: neuron ", n, " is in experts ", lab[n], " and ", j));
      lab[n] = j;
    }
  for (int64_t n = 0; n < num_neurons; ++n)
    if (lab[n] < 0) fail(cat("partition: neuron ", n, " is in no expert"));
  return lab;
}

CoverStats validate(const Partition& p) {
  std::vector<int32_t> mult(p.num_neurons, 0);
  CoverStats st;
  st.min_size = p.experts.empty() ? 0 : INT64_MAX;
  for (int j = 0; j < p.num_experts(); ++j) {
    const auto& e = p.experts[j];
    st.min_size = std::min<int64_t>(st.min_size, e.size());
    st.max_size = std::max<int64_t>(st.max_size, e.size());
    std::vector<int32_t> sorted = e;
    std::sort(sorted.begin(), sorted.end());
    for (size_t k = 0; k < sorted.size(); ++k) {
      if (sorted[k] < 0 || sorted[k] >= p.num_neurons)
        fail(cat("partition: expert ", j, " has neuron id ", sorted[k], " outside 0..", p.num_neurons - 1));
      if (k > 0 && sorted[k] == sorted[k - 1]) fail(cat("partition: expert ", j, " lists neuron ", sorted[k], " twice"));
      ++mult[sorted[k]];
    }
  }
  for (int32_t m : mult) {
    if (m == 0) ++st.dropped;
    if (m > 1) ++st.shared;
    st.max_multiplicity = std::max<int64_t>(st.max_multiplicity, m);
  }
  return st;
}

std::string part_file_name(int layer, int num_experts) { return cat(layer, ".part.", num_experts); }

Partition parse_part_text(const std::string& text, const std::string& origin, int num_experts,
                          int64_t num_neurons) {
  std::vector<std::vector<int32_t>> ids;  // per neuron
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string where = cat(origin, ":", line_no);
    std::vector<int32_t> row;
    std::string t = trim(line);
    if (!t.empty()) {
      for (const std::string& field : split(t, ',')) {
        std::string f = trim(field);
        if (f.empty()) fail(cat(where, ": empty expert id in '", t, "'"));
        for (char c : f)
          if (c < '0' || c > '9') fail(cat(where, ": expected expert ids (e.g. 3 or 0,5), got '", t, "'"));
        if (f.size() > 9) fail(cat(where, ": expert id '", f, "' too large"));
        int32_t id = std::stoi(f);
        if (num_experts > 0 && id >= num_experts)
          fail(cat(where, ": expert id ", id, " out of range 0..", num_experts - 1));
        if (std::find(row.begin(), row.end(), id) != row.end())
          fail(cat(where, ": expert id ", id, " listed twice"));
        row.push_back(id);
      }
    }
    ids.push_back(std::move(row));
  }
  if (num_neurons > 0 && static_cast<int64_t>(ids.size()) != num_neurons)
    fail(cat(origin, ":", ids.size(), ": file has ", ids.size(), " neuron lines, expected ", num_neurons));
  int n_exp = num_experts;
  if (n_exp <= 0)
    for (const auto& r : ids)
      for (int32_t id : r) n_exp = std::max(n_exp, id + 1);
  Partition p;
  p.num_neurons = static_cast<int64_t>(ids.size());
  p.experts.assign(n_exp, {});
  for (size_t n = 0; n < ids.size(); ++n)
    for (int32_t id : ids[n]) p.experts[id].push_back(static_cast<int32_t>(n));
  return p;
}

Partition read_part_file(const std::string& path, int num_experts, int64_t num_neurons) {
  return parse_part_text(read_file(path), path, num_experts, num_neurons);
}

std::string format_part_text(const Partition& p) {
  validate(p);  // ids in range, no duplicates
  std::vector<std::vector<int32_t>> per(p.num_neurons);
  for (int j = 0; j < p.num_experts(); ++j)
    for (int32_t n : p.experts[j]) per[n].push_back(j);
  std::string out;
  out.reserve(p.num_neurons * 3);
  for (const auto& r : per) {
    for (size_t k = 0; k < r.size(); ++k) {
      if (k) out += ',';
      out += std::to_string(r[k]);
    }
    out += '\n';
  }
  return out;
}

void write_part_file(const std::string& path, const Partition& p) { write_file_atomic(path, format_part_text(p)); }

}  // namespace mf
