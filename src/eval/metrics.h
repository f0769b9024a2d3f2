// Per-document metrics and their aggregation with lm-eval's formulas (lm_eval/api/metrics.py):
// acc, acc_norm (by characters), acc_bytes, exact_match, perplexity, word/byte perplexity, bits_per_byte,
// mean stderr, bootstrap stderr (lm-eval's exact resampling: Python's Mersenne Twister seeded per chunk),
// and size-weighted groups with pooled stderr.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/engine.h"
#include "eval/requests.h"
#include "eval/task.h"

namespace mf::eval {

// Per-document values of one metric; weights are used by the weighted aggregations.
struct MetricItems {
  MetricSpec spec;
  std::vector<double> values;
  std::vector<double> weights;
};

// One TokenScore per request of each instance (rolling: already summed over windows).
std::vector<MetricItems> compute_metric_items(const TaskDef& task, const std::vector<Instance>& instances,
                                              const std::vector<std::vector<TokenScore>>& scores);

// numpy.argmax semantics: first maximum, or the first NaN if any.
int64_t np_argmax(const std::vector<double>& v);

// lm-eval aggregations.
double agg_mean(const std::vector<double>& v);  // Python sum() (compensated, as CPython >= 3.12) / n
double agg_perplexity(const std::vector<double>& lls);  // exp(-mean)
double agg_weighted_perplexity(const std::vector<double>& lls, const std::vector<double>& weights);
double agg_bits_per_byte(const std::vector<double>& lls, const std::vector<double>& bytes);
double sample_stddev(const std::vector<double>& v);  // n-1 denominator
double mean_stderr(const std::vector<double>& v);
// lm-eval bootstrap_stderr(f, xs, iters): chunks of min(1000, iters) resamples, chunk i drawn with
// random.Random(i).choices(xs, k=len(xs)); the result is sample_stddev over all resampled values.
double bootstrap_stderr_perplexity(const std::vector<double>& lls, int64_t iters);
// Python's random.Random(seed): MT19937 seeded by init_by_array, random() with 53 bits.
class PyRandom {
 public:
  explicit PyRandom(uint64_t seed);
  uint32_t next_u32();
  double random();

 private:
  uint32_t mt_[624];
  int index_ = 625;
};

struct MetricResult {
  std::string name;
  double value = 0.0;
  bool has_stderr = false;  // false: "N/A"
  double stderr = 0.0;
  bool higher_is_better = true;
};

struct TaskResult {
  std::string name;
  std::string alias;
  double version = 1.0;
  bool is_group = false;
  int64_t samples = 0;           // documents evaluated (effective)
  int64_t original_samples = 0;  // documents in the file
  std::vector<MetricResult> metrics;
  const MetricResult* find(const std::string& metric) const;
};

// Aggregates one task's items. bootstrap_iters <= 0 turns every stderr off (as in lm-eval).
std::vector<MetricResult> aggregate_metrics(const std::vector<MetricItems>& items, int64_t bootstrap_iters);

// lm-eval aggregate_subtask_metrics and pooled_sample_stderr.
double weighted_group_value(const std::vector<double>& values, const std::vector<int64_t>& sizes,
                            bool weight_by_size);
double pooled_sample_stderr(const std::vector<double>& stderrs, const std::vector<int64_t>& sizes);

// A group's result from the results of ALL tasks below it (its leaf tasks, through subgroups), as
// lm-eval >= 0.4.4 aggregates: mmlu's value and pooled stderr come from its 57 subjects, not from its
// four categories (lm-eval 0.4.3 pooled the categories; the values agree, the stderrs do not).
// Every metric present in all leaves is aggregated; a stderr is "N/A" when any leaf's is.
TaskResult aggregate_group(const GroupDef& group, const std::vector<const TaskResult*>& leaves);

}  // namespace mf::eval
