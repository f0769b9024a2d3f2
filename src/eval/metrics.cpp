#include "eval/metrics.h"

#include <cmath>
#include <limits>
#include <map>

#include "eval/text.h"
#include "util/error.h"

namespace mf::eval {

int64_t np_argmax(const std::vector<double>& v) {
  int64_t best = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (std::isnan(v[i])) return static_cast<int64_t>(i);
    if (v[i] > v[static_cast<size_t>(best)]) best = static_cast<int64_t>(i);
  }
  return best;
}

namespace {

// CPython >= 3.12 sum() of floats: Neumaier compensated summation starting from 0.
double py_sum(const std::vector<double>& v) {
  double s = 0.0, c = 0.0;
  for (double x : v) {
    double t = s + x;
    if (std::fabs(s) >= std::fabs(x)) c += (s - t) + x;
    else c += (x - t) + s;
    s = t;
  }
  if (c != 0.0 && std::isfinite(c)) s += c;
  return s;
}

}  // namespace

double agg_mean(const std::vector<double>& v) {
  if (v.empty()) fail("cannot aggregate zero documents");
  return py_sum(v) / static_cast<double>(v.size());
}

double agg_perplexity(const std::vector<double>& lls) { return std::exp(-agg_mean(lls)); }

double agg_weighted_perplexity(const std::vector<double>& lls, const std::vector<double>& weights) {
  return std::exp(-(py_sum(lls) / py_sum(weights)));
}

double agg_bits_per_byte(const std::vector<double>& lls, const std::vector<double>& bytes) {
  return -(py_sum(lls) / py_sum(bytes)) / std::log(2.0);
}

double sample_stddev(const std::vector<double>& v) {
  const double mu = agg_mean(v);
  std::vector<double> sq(v.size());
  for (size_t i = 0; i < v.size(); ++i) sq[i] = (v[i] - mu) * (v[i] - mu);
  return std::sqrt(py_sum(sq) / static_cast<double>(v.size() - 1));
}

double mean_stderr(const std::vector<double>& v) {
  return sample_stddev(v) / std::sqrt(static_cast<double>(v.size()));
}

PyRandom::PyRandom(uint64_t seed) {
  // init_genrand(19650218) then init_by_array(key) with the seed's 32-bit words, low word first.
  std::vector<uint32_t> key;
  uint64_t s = seed;
  do {
    key.push_back(static_cast<uint32_t>(s & 0xffffffffu));
    s >>= 32;
  } while (s);
  mt_[0] = 19650218u;
  for (int i = 1; i < 624; ++i) mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<uint32_t>(i);
  int i = 1, j = 0;
  const int klen = static_cast<int>(key.size());
  for (int k = std::max(624, klen); k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[static_cast<size_t>(j)] +
             static_cast<uint32_t>(j);
    ++i;
    ++j;
    if (i >= 624) {
      mt_[0] = mt_[623];
      i = 1;
    }
    if (j >= klen) j = 0;
  }
  for (int k = 623; k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - static_cast<uint32_t>(i);
    ++i;
    if (i >= 624) {
      mt_[0] = mt_[623];
      i = 1;
    }
  }
  mt_[0] = 0x80000000u;
  index_ = 624;
}

uint32_t PyRandom::next_u32() {
  if (index_ >= 624) {
    for (int k = 0; k < 624; ++k) {
      uint32_t y = (mt_[k] & 0x80000000u) | (mt_[(k + 1) % 624] & 0x7fffffffu);
      mt_[k] = mt_[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
    }
    index_ = 0;
  }
  uint32_t y = mt_[index_++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= (y >> 18);
  return y;
}

double PyRandom::random() {
  uint32_t a = next_u32() >> 5, b = next_u32() >> 6;
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

double bootstrap_stderr_perplexity(const std::vector<double>& lls, int64_t iters) {
  const int64_t chunk = std::min<int64_t>(1000, iters);
  const double n = static_cast<double>(lls.size());
  std::vector<double> res;
  std::vector<double> sample(lls.size());
  for (int64_t i = 0; i < iters / chunk; ++i) {
    PyRandom rnd(static_cast<uint64_t>(i));
    for (int64_t r = 0; r < chunk; ++r) {
      for (size_t k = 0; k < sample.size(); ++k)
        sample[k] = lls[static_cast<size_t>(std::floor(rnd.random() * n))];
      res.push_back(agg_perplexity(sample));
    }
  }
  return sample_stddev(res);
}

const MetricResult* TaskResult::find(const std::string& metric) const {
  for (const auto& m : metrics)
    if (m.name == metric) return &m;
  return nullptr;
}

std::vector<MetricItems> compute_metric_items(const TaskDef& task, const std::vector<Instance>& instances,
                                              const std::vector<std::vector<TokenScore>>& scores) {
  if (scores.size() != instances.size()) fail("internal: scores do not match instances");
  std::vector<MetricItems> out;
  for (const auto& spec : task.metrics) out.push_back({spec, {}, {}});
  for (size_t d = 0; d < instances.size(); ++d) {
    const Instance& inst = instances[d];
    const auto& sc = scores[d];
    if (sc.size() != inst.requests.size()) fail("internal: scores do not match requests");
    for (auto& m : out) {
      const std::string& name = m.spec.name;
      if (task.output_type == OutputType::MultipleChoice) {
        std::vector<double> lls(sc.size());
        for (size_t k = 0; k < sc.size(); ++k) lls[k] = sc[k].logprob;
        if (name == "acc") {
          m.values.push_back(np_argmax(lls) == inst.gold ? 1.0 : 0.0);
        } else if (name == "acc_norm" || name == "acc_bytes") {
          std::vector<double> norm(lls.size());
          for (size_t k = 0; k < lls.size(); ++k) {
            double len = name == "acc_norm" ? static_cast<double>(utf8_length(inst.choices[k]))
                                            : static_cast<double>(inst.choices[k].size());
            norm[k] = lls[k] / len;
          }
          m.values.push_back(np_argmax(norm) == inst.gold ? 1.0 : 0.0);
        } else if (name == "exact_match") {
          m.values.push_back(sc[static_cast<size_t>(inst.gold)].greedy ? 1.0 : 0.0);
        } else {
          fail("task '" + task.name + "': metric '" + name + "' is not available for multiple_choice");
        }
      } else if (task.output_type == OutputType::Loglikelihood) {
        if (name == "perplexity") m.values.push_back(sc[0].logprob);
        else if (name == "acc") m.values.push_back(sc[0].greedy ? 1.0 : 0.0);
        else fail("task '" + task.name + "': metric '" + name + "' is not available for loglikelihood");
      } else {
        m.values.push_back(sc[0].logprob);
        if (name == "word_perplexity") m.weights.push_back(static_cast<double>(inst.words));
        else if (name == "byte_perplexity" || name == "bits_per_byte") m.weights.push_back(static_cast<double>(inst.bytes));
        else fail("task '" + task.name + "': metric '" + name + "' is not available for loglikelihood_rolling");
      }
    }
  }
  return out;
}

std::vector<MetricResult> aggregate_metrics(const std::vector<MetricItems>& items, int64_t bootstrap_iters) {
  std::vector<MetricResult> out;
  for (const auto& m : items) {
    MetricResult r;
    r.name = m.spec.name;
    r.higher_is_better = m.spec.higher_is_better;
    const std::string& agg = m.spec.aggregation;
    const bool stderr_possible = bootstrap_iters > 0 && m.values.size() > 1;
    if (agg == "mean") {
      r.value = agg_mean(m.values);
      if (stderr_possible) {
        r.has_stderr = true;
        r.stderr = mean_stderr(m.values);
      }
    } else if (agg == "perplexity") {
      r.value = agg_perplexity(m.values);
      if (stderr_possible) {
        r.has_stderr = true;
        r.stderr = bootstrap_stderr_perplexity(m.values, bootstrap_iters);
      }
    } else if (agg == "weighted_perplexity") {
      r.value = agg_weighted_perplexity(m.values, m.weights);
    } else if (agg == "bits_per_byte") {
      r.value = agg_bits_per_byte(m.values, m.weights);
    } else {
      fail("unknown aggregation '" + agg + "'");
    }
    out.push_back(r);
  }
  return out;
}

double weighted_group_value(const std::vector<double>& values, const std::vector<int64_t>& sizes,
                            bool weight_by_size) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < values.size(); ++i) {
    double w = weight_by_size ? static_cast<double>(sizes[i]) : 1.0;
    num += values[i] * w;
    den += w;
  }
  return num / den;
}

double pooled_sample_stderr(const std::vector<double>& stderrs, const std::vector<int64_t>& sizes) {
  double num = 0.0, total = 0.0;
  for (size_t i = 0; i < stderrs.size(); ++i) {
    const double n = static_cast<double>(sizes[i]);
    num += (n - 1.0) * stderrs[i] * stderrs[i] * n;
    total += n;
  }
  const double pooled_var = num / (total - static_cast<double>(stderrs.size()));
  return std::sqrt(pooled_var / total);
}

TaskResult aggregate_group(const GroupDef& group, const std::vector<const TaskResult*>& children) {
  TaskResult g;
  g.name = group.name;
  g.alias = group.name;
  g.version = group.version;
  g.is_group = true;
  if (children.empty()) return g;
  std::vector<int64_t> sizes;
  for (const auto* c : children) {
    sizes.push_back(c->samples);
    g.samples += c->samples;
    g.original_samples += c->original_samples;
  }
  for (const auto& m0 : children[0]->metrics) {
    std::vector<double> values, stderrs;
    bool all = true, all_stderr = true;
    for (const auto* c : children) {
      const MetricResult* m = c->find(m0.name);
      if (!m) {
        all = false;
        break;
      }
      values.push_back(m->value);
      stderrs.push_back(m->stderr);
      all_stderr = all_stderr && m->has_stderr;
    }
    if (!all) continue;
    MetricResult r;
    r.name = m0.name;
    r.higher_is_better = m0.higher_is_better;
    r.value = weighted_group_value(values, sizes, group.weight_by_size);
    if (all_stderr) {
      r.has_stderr = true;
      r.stderr = pooled_sample_stderr(stderrs, sizes);
    }
    g.metrics.push_back(r);
  }
  return g;
}

}  // namespace mf::eval
