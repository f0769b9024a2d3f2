#include "model/moe_block.h"

namespace mf {

Routing route_topk(const at::Tensor& router_logits, int64_t k, bool renormalize) {
  Routing r;
  r.probs = at::softmax(router_logits.to(at::kFloat), -1);
  // A stable descending sort keeps equal probabilities in index order: ties go to the lower expert.
  auto sorted = at::sort(r.probs, /*stable=*/true, /*dim=*/-1, /*descending=*/true);
  r.weights = std::get<0>(sorted).narrow(-1, 0, k);
  r.experts = std::get<1>(sorted).narrow(-1, 0, k);
  if (renormalize) r.weights = r.weights / r.weights.sum(-1, true);
  return r;
}

MoeBlock::MoeBlock(const MoeBlockOptions& o) : opt(o) {
  gate = register_module("gate", std::make_shared<Linear>(o.hidden, o.num_experts, false));
  experts_list = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < o.num_experts; ++e) {
    auto m = std::make_shared<GatedMLP>(o.hidden, o.expert_inner, o.act, false, o.gate_name, o.up_name, o.down_name);
    experts_list->push_back(m);
    experts.push_back(m);
  }
  if (o.shared_inner > 0) {
    shared_expert = register_module("shared_expert", std::make_shared<GatedMLP>(o.hidden, o.shared_inner, o.act, false));
    shared_expert_gate = register_module("shared_expert_gate", std::make_shared<Linear>(o.hidden, 1, false));
  }
}

at::Tensor MoeBlock::forward(const at::Tensor& x, Hooks* hooks, int layer, const at::Tensor& valid) {
  const int64_t n = x.size(0), k = opt.top_k, E = opt.num_experts;
  // Routing runs in fp32 whatever the model dtype.
  at::Tensor logits = at::linear(x.to(at::kFloat), gate->weight.to(at::kFloat));
  if (hooks && hooks->wants(HookPoint::router_logits, layer))
    logits = hooks->fire(HookPoint::router_logits, layer, logits, valid);
  Routing r = route_topk(logits, k, opt.renormalize);
  at::Tensor w = r.weights.to(x.scalar_type()).reshape({-1});  // [N*k]

  // Group the (token, slot) pairs by expert.
  at::Tensor flat = r.experts.reshape({-1});
  at::Tensor order = std::get<1>(at::sort(flat, /*stable=*/true, 0, false));
  at::Tensor counts = at::bincount(flat, {}, E).to(at::kCPU);
  auto cnt = counts.accessor<int64_t, 1>();

  at::Tensor out = at::zeros_like(x);
  const bool want_out = hooks && hooks->wants(HookPoint::expert_output, layer);
  int64_t offset = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t c = cnt[e];
    if (c == 0) continue;
    at::Tensor pairs = order.narrow(0, offset, c);
    offset += c;
    at::Tensor tokens = at::div(pairs, k, "floor");
    at::Tensor y = experts[e]->forward(x.index_select(0, tokens), hooks, layer, valid, static_cast<int>(e), tokens);
    if (want_out) y = hooks->fire(HookPoint::expert_output, layer, y, valid, static_cast<int>(e), tokens);
    out = out.index_add(0, tokens, y * w.index_select(0, pairs).unsqueeze(1));
  }
  (void)n;
  if (shared_expert) {
    at::Tensor s = shared_expert->forward(x, hooks, layer, valid, -2);
    if (want_out) s = hooks->fire(HookPoint::expert_output, layer, s, valid, -2);
    out = out + at::sigmoid(shared_expert_gate->forward(x)) * s;
  }
  return out;
}

}  // namespace mf
