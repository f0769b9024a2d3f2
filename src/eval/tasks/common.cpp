#include "eval/tasks/tasks.h"

namespace mf::eval {

MetricSpec metric_acc() { return {"acc", "mean", true}; }
MetricSpec metric_acc_norm() { return {"acc_norm", "mean", true}; }

nlohmann::ordered_json lm_metric(const std::string& name, const std::string& aggregation, bool higher_is_better) {
  return {{"metric", name}, {"aggregation", aggregation}, {"higher_is_better", higher_is_better}};
}

nlohmann::ordered_json lm_metric(const std::string& name) { return {{"metric", name}}; }

}  // namespace mf::eval
