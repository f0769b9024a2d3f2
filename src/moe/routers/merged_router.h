// Merged router: the router of an MoE layer whose N experts were merged into r (HC-SMoE,
// `moeforge merge --output exact`, docs/merge.md). The original N-row router is kept: softmax
// and top-k run over the N logits as before, each selected expert i stands for its cluster
// c(i) (`expert_map`), and a token's weight on a merged expert is the sum of its selected
// members' weights — each selected merged expert runs once. Scores are reported per merged
// expert (the members' probabilities summed; logits as their log-sum-exp, whose softmax is that
// sum), so telemetry and hooks see r experts.
#pragma once
#include <vector>

#include "moe/routers/router.h"

namespace mf::moe {

class MergedRouterImpl : public RouterImpl {
 public:
  // weight [N, d] (the original router), expert_map [N] with values in 0..r-1.
  MergedRouterImpl(const at::Tensor& weight, std::vector<int64_t> expert_map, int64_t r, SelectionConfig sel,
                   ScoreFn score = ScoreFn::Softmax);

  RouterOutput route(const at::Tensor& x, bool training) override;
  const char* kind() const override { return "merged"; }

 private:
  at::Tensor weight_;
  std::vector<int64_t> map_;
  at::Tensor map_t_;  // int64 [N]
  SelectionConfig source_sel_;
};

}  // namespace mf::moe
