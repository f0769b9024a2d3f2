// moeforge MoE models ("model_type": "moeforge", docs/format.md): a Llama / Mistral / Qwen2
// model whose FFN on the layers in `moe_layers` was split into experts of possibly different
// widths (HEMoE, MoEfication, EMoE, MoEBERT, random splits). Attention, norms and the dense
// layers are the base family's (llama.cpp); the MoE block is the shared MoE layer (moe_ffn.h)
// with the router the config names:
//   linear  logits = W x                               mlp.router.weight [E, H]
//   mlp     logits = W2 tanh(W1 x / |x|) (MoEfication)  mlp.router.0.weight [E, H], .2.weight [E, E]
//   avgk    logits_e = mean key of expert e · x (EMoE)  no tensor: recomputed from the experts
#include "model/moe_ffn.h"
#include "moe/routers/linear_router.h"
#include "util/error.h"

namespace mf {
namespace {

// MoEfication's router as PyTorch's Sequential(Linear(H, E, bias=False), Tanh, Linear(E, E,
// bias=False)) on the L2-normalised input, so its parameters are named 0.weight / 2.weight.
class SequentialMlpRouter : public moe::RouterImpl {
 public:
  SequentialMlpRouter(int64_t dim, int64_t num_experts, moe::SelectionConfig sel, moe::ScoreFn score)
      : RouterImpl(dim, num_experts, sel, score) {
    l0_ = register_module("0", std::make_shared<Linear>(dim, num_experts, false));
    l2_ = register_module("2", std::make_shared<Linear>(num_experts, num_experts, false));
  }
  moe::RouterOutput route(const at::Tensor& x, bool training) override {
    const at::ScalarType dt = routing_dtype(x);
    at::Tensor xr = x.to(dt);
    xr = xr / xr.norm(2, -1, true).clamp_min(1e-12);
    at::Tensor h = at::tanh(at::linear(xr, l0_->weight.to(dt)));
    return finish(at::linear(h, l2_->weight.to(dt)), training);
  }
  const char* kind() const override { return "mlp"; }

 private:
  std::shared_ptr<Linear> l0_, l2_;
};

moe::GateMode gate_mode(const std::string& g) {
  if (g == "unit") return moe::GateMode::UnitST;
  if (g == "renorm") return moe::GateMode::Renorm;
  if (g == "prob") return moe::GateMode::Prob;
  return moe::GateMode::Ones;
}

}  // namespace

std::shared_ptr<MoeFFN> make_moeforge_ffn(const ModelConfig& cfg, int64_t l) {
  const MoeforgeRouter& r = cfg.router;
  MoeFfnSpec s;
  s.hidden = cfg.hidden_size;
  s.widths = cfg.layer_expert_widths(l);
  s.reference_width = cfg.intermediate_size;
  s.act = cfg.hidden_act;
  s.router_name = "router";
  moe::SelectionConfig sel;
  sel.k = cfg.num_experts_per_tok;
  sel.max_k = cfg.num_experts_per_tok;
  sel.top_p = r.top_p;
  sel.dynk_tau = r.dynk_tau;
  sel.selection = r.selection == "top_p"      ? moe::Selection::TopP
                  : r.selection == "dynk_max" ? moe::Selection::DynKMax
                                              : moe::Selection::TopK;
  sel.gate = gate_mode(r.gate);
  const moe::ScoreFn score = r.score == "sigmoid" ? moe::ScoreFn::Sigmoid : moe::ScoreFn::Softmax;
  const int64_t E = cfg.num_experts, H = cfg.hidden_size;
  if (r.type == "linear") {
    s.router = std::make_shared<moe::LinearRouterImpl>(at::empty({E, H}), sel, score);
  } else if (r.type == "mlp") {
    s.router = std::make_shared<SequentialMlpRouter>(H, E, sel, score);
  } else if (r.type == "avgk") {
    s.avgk = true;
    s.avgk_selection = sel;
  } else {
    fail_file(cfg.origin, "router.type \"" + r.type + "\" is not supported (supported: linear, mlp, avgk)");
  }
  return std::make_shared<MoeFFN>(s);
}

}  // namespace mf
