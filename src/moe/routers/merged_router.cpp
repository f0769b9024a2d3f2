#include "moe/routers/merged_router.h"

#include "moe/routers/registry.h"
#include "moe/routers/selection.h"
#include "util/error.h"
#include "util/str.h"

namespace mf::moe {

MergedRouterImpl::MergedRouterImpl(const at::Tensor& weight, std::vector<int64_t> expert_map, int64_t r,
                                   SelectionConfig sel, ScoreFn score)
    : RouterImpl(weight.size(1), r, sel, score), map_(std::move(expert_map)), source_sel_(sel) {
  if (static_cast<int64_t>(map_.size()) != weight.size(0))
    fail(cat("merged router: expert_map has ", map_.size(), " entries, the router ", weight.size(0), " rows"));
  for (int64_t c : map_)
    if (c < 0 || c >= r) fail(cat("merged router: expert_map entry ", c, " is not an expert index (0..", r - 1, ")"));
  weight_ = register_parameter("weight", weight.detach().to(at::kFloat).clone());
  map_t_ = at::tensor(map_, at::kLong);
}

RouterOutput MergedRouterImpl::route(const at::Tensor& x, bool training) {
  const at::ScalarType dt = routing_dtype(x);
  const at::Tensor logits = at::linear(x.to(dt), weight_.to(dt));
  const at::Tensor probs = score_ == ScoreFn::Softmax ? at::softmax(logits, -1) : at::sigmoid(logits);
  at::Tensor idx;
  {
    at::NoGradGuard ng;
    idx = select_experts(probs.detach(), source_sel_);
  }
  const at::Tensor gates = gate_values(probs, idx, source_sel_.gate);
  // Members of one cluster selected together: one slot with the summed weight, the others empty.
  const int64_t T = idx.size(0), K = idx.size(1);
  at::Tensor cidx = at::full({T, K}, -1, at::kLong);
  {
    const at::Tensor src = idx.contiguous();
    const int64_t* s = src.data_ptr<int64_t>();
    int64_t* c = cidx.data_ptr<int64_t>();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < K; ++j) {
        if (s[t * K + j] < 0) continue;
        const int64_t m = map_[s[t * K + j]];
        bool seen = false;
        for (int64_t i = 0; i < j; ++i) seen |= c[t * K + i] == m;
        if (!seen) c[t * K + j] = m;
      }
  }
  const at::Tensor valid_src = idx.ge(0), valid = cidx.ge(0);
  const at::Tensor mapped = map_t_.index_select(0, idx.clamp_min(0).reshape({-1})).reshape({T, K});
  const at::Tensor per_cluster = at::zeros({T, num_experts_}, gates.options())
                                     .scatter_add(1, mapped, gates * valid_src.to(gates.scalar_type()));
  RouterOutput out;
  out.idx = cidx;
  out.gates = per_cluster.gather(1, cidx.clamp_min(0)) * valid.to(gates.scalar_type());
  const at::Tensor index = map_t_.unsqueeze(0).expand({T, -1});
  out.probs = at::zeros({T, num_experts_}, probs.options()).scatter_add(1, index, probs);
  out.logits = at::log(out.probs.clamp_min(1e-30));
  out.clean_logits = out.logits;
  (void)training;  // a merged model is for inference; no noise or jitter
  return out;
}

RouterEntry merged_router_entry() {
  RouterEntry e;
  e.description = "merged: the original N-row router of merged experts, router.expert_maps[layer][i] = merged expert of "
                  "original expert i (HC-SMoE exact output)";
  auto source_experts = [](const RouterSpec& s) {
    if (!s.config.contains("num_source_experts") || !s.config["num_source_experts"].is_number_integer())
      fail("router.type merged needs router.num_source_experts");
    return s.config["num_source_experts"].get<int64_t>();
  };
  e.make = [source_experts](const RouterSpec& s) -> Router {
    if (!s.config.contains("expert_map")) fail("router.type merged needs router.expert_maps");
    return std::make_shared<MergedRouterImpl>(at::empty({source_experts(s), s.dim}),
                                              s.config["expert_map"].get<std::vector<int64_t>>(), s.num_experts,
                                              s.selection, s.score);
  };
  e.tensors = [source_experts](const RouterSpec& s) {
    return std::vector<std::pair<std::string, std::vector<int64_t>>>{{"weight", {source_experts(s), s.dim}}};
  };
  return e;
}

}  // namespace mf::moe
