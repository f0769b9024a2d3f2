#include "eval/tasks/tasks.h"

namespace mf::eval {

MetricSpec metric_acc() { return {"acc", "mean", true}; }
MetricSpec metric_acc_norm() { return {"acc_norm", "mean", true}; }

}  // namespace mf::eval
