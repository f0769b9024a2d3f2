#include "merge/calibrate.h"

#include <algorithm>
#include <map>

#include "model/model.h"
#include "model/moe_ffn.h"
#include "profile/calibration_data.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/progress.h"
#include "util/str.h"

namespace mf {

MergeCalibration calibrate_merge(Model& model, const Tokenizer& tok, const MergeCalibOptions& o) {
  const ModelConfig& cfg = model.config();
  MergeCalibration out;
  out.seq_len = o.seq_len > 0 ? o.seq_len : std::min<int64_t>(2048, cfg.max_position_embeddings);

  // Documents concatenated (each as the tokenizer encodes it by default, BOS included where it
  // adds one), cut into blocks; the remainder is dropped (§A.2).
  std::vector<int64_t> stream;
  const int64_t wanted = o.blocks * out.seq_len;
  for (const CalibrationDoc& d : read_calibration_jsonl(o.file, "", false)) {
    for (int32_t id : tok.encode(d.text, true)) stream.push_back(id);
    if (static_cast<int64_t>(stream.size()) >= wanted) break;
  }
  out.blocks = std::min<int64_t>(o.blocks, static_cast<int64_t>(stream.size()) / out.seq_len);
  if (out.blocks < 1)
    fail_file(o.file, cat("too short for one calibration block: ", stream.size(), " tokens, a block is ", out.seq_len));
  out.tokens = out.blocks * out.seq_len;

  struct Acc {
    std::shared_ptr<MoeFFN> block;
    at::Tensor out_sum, counts, probs, reap_sum, logit_gram;  // fp64
    at::Tensor norms;  // [N, E] ‖E_j(x_t)‖ of the batch in flight (ffn_input comes before router_logits)
    std::vector<at::Tensor> inputs, logits, gram;
    int64_t kept = 0, gram_kept = 0, logits_kept = 0;
  };
  std::map<int, Acc> acc;
  for (int64_t l = 0; l < cfg.num_layers; ++l)
    if (auto b = std::dynamic_pointer_cast<MoeFFN>(model.ffn(l))) {
      const int64_t E = b->num_experts();
      Acc a;
      a.block = b;
      a.out_sum = at::zeros({E, cfg.hidden_size}, at::kDouble);
      a.counts = at::zeros({E}, at::kDouble);
      a.probs = at::zeros({E}, at::kDouble);
      a.reap_sum = at::zeros({E}, at::kDouble);
      a.logit_gram = at::zeros({E, E}, at::kDouble);
      acc[static_cast<int>(l)] = a;
    }
  if (acc.empty()) fail_file(cfg.origin, "the model has no routed MoE layer");

  const int64_t keep = std::max(o.error_tokens, o.keep_tokens);
  const int64_t logit_limit = o.logits ? keep : o.gram ? o.error_tokens : 0;
  const int h_in = model.hooks().add(HookPoint::ffn_input, [&](HookEvent& ev) {
    auto it = acc.find(ev.layer);
    if (it == acc.end()) return;
    Acc& a = it->second;
    const at::Tensor x = ev.tensor.to(at::kFloat);
    std::vector<at::Tensor> outs;
    for (int64_t e = 0; e < a.block->num_experts(); ++e)
      outs.push_back(a.block->experts[static_cast<size_t>(e)]->forward(x, nullptr));
    const at::Tensor y = at::stack(outs, 1);  // [N, E, d]
    a.out_sum += y.to(at::kDouble).sum(0);
    a.norms = y.norm(2, -1).to(at::kDouble);
    if (a.kept < keep) {
      const int64_t n = std::min<int64_t>(keep - a.kept, x.size(0));
      a.inputs.push_back(x.narrow(0, 0, n).clone());
      a.kept += n;
    }
    if (o.gram && a.gram_kept < o.error_tokens) {
      const int64_t n = std::min<int64_t>(o.error_tokens - a.gram_kept, x.size(0));
      const at::Tensor yk = y.narrow(0, 0, n).to(at::kDouble);
      a.gram.push_back(at::bmm(yk, yk.transpose(1, 2)));
      a.gram_kept += n;
    }
  });
  const int64_t k = cfg.num_experts_per_tok;
  const bool renormalize = cfg.norm_topk_prob;
  const int h_logits = model.hooks().add(HookPoint::router_logits, [&](HookEvent& ev) {
    auto it = acc.find(ev.layer);
    if (it == acc.end()) return;
    Acc& a = it->second;
    const at::Tensor logits = ev.tensor.to(at::kDouble);
    const at::Tensor probs = at::softmax(logits, -1);
    a.probs += probs.sum(0);
    a.logit_gram += logits.t().mm(logits);
    auto [top, idx] = probs.topk(std::min<int64_t>(k, logits.size(1)), -1);
    a.counts.index_add_(0, idx.reshape({-1}), at::ones({idx.numel()}, at::kDouble));
    // REAP: gate (as the model combines: renormalised or not) times the expert's output norm.
    if (renormalize) top = top / top.sum(-1, true);
    a.reap_sum.index_add_(0, idx.reshape({-1}), (top * a.norms.gather(1, idx)).reshape({-1}));
    if (a.logits_kept < logit_limit) {
      const int64_t n = std::min<int64_t>(logit_limit - a.logits_kept, logits.size(0));
      a.logits.push_back(ev.tensor.narrow(0, 0, n).to(at::kFloat).clone());
      a.logits_kept += n;
    }
  });

  {
    at::NoGradGuard no_grad;
    model.eval();
    Progress bar("calibrate", out.tokens, "tok");
    for (int64_t b = 0; b < out.blocks; ++b) {
      std::vector<int64_t> ids(stream.begin() + b * out.seq_len, stream.begin() + (b + 1) * out.seq_len);
      model.forward_hidden(at::tensor(ids, at::kLong).unsqueeze(0));
      bar.advance(out.seq_len);
    }
    bar.finish();
  }
  model.hooks().remove(h_in);
  model.hooks().remove(h_logits);

  for (auto& [layer, a] : acc) {
    LayerCalibration lc;
    lc.layer = layer;
    lc.mean_output = (a.out_sum / static_cast<double>(out.tokens)).to(at::kFloat);
    lc.frequency = a.counts / a.counts.sum();
    lc.soft_score = a.probs / a.probs.sum();
    lc.reap = a.reap_sum / a.counts.clamp_min(1.0);
    lc.logit_gram = a.logit_gram;
    lc.inputs = at::cat(a.inputs, 0);
    if (!a.logits.empty()) lc.logits = at::cat(a.logits, 0);
    if (o.gram) lc.gram = at::cat(a.gram, 0);
    out.layers.push_back(std::move(lc));
  }
  return out;
}

}  // namespace mf
