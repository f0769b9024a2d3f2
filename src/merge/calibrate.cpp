#include "merge/calibrate.h"

#include <algorithm>
#include <map>

#include "model/model.h"
#include "model/moe_ffn.h"
#include "profile/calibration_data.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/log.h"
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

  // The first tokens' rows (MoE inputs, router logits, Gram matrices) are kept at their stream
  // positions: row t of a kept tensor is token t of the stream, written by the rank that runs
  // its block, zero elsewhere.
  const int64_t keep = std::max(o.error_tokens, o.keep_tokens);
  const int64_t input_rows = std::min(keep, out.tokens);
  const int64_t logit_rows = std::min(o.logits ? keep : o.gram ? o.error_tokens : 0, out.tokens);
  const int64_t gram_rows = std::min(o.error_tokens, out.tokens);

  struct Acc {
    std::shared_ptr<MoeFFN> block;
    at::Tensor out_sum, counts, probs, reap_sum, logit_gram;  // fp64 sums over the tokens
    at::Tensor inputs, logits, gram;                          // kept rows (logits, gram: undefined when not kept)
    at::Tensor norms;  // [N, E] ‖E_j(x_t)‖ of the block in flight (ffn_input comes before router_logits)
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
      a.inputs = at::zeros({input_rows, cfg.hidden_size}, at::kFloat);
      if (logit_rows > 0) a.logits = at::zeros({logit_rows, E}, at::kFloat);
      if (o.gram) a.gram = at::zeros({gram_rows, E, E}, at::kDouble);
      acc[static_cast<int>(l)] = a;
    }
  if (acc.empty()) fail_file(cfg.origin, "the model has no routed MoE layer");

  int64_t block_start = 0;  // stream position of the first token of the block in flight
  // How many of the block's first `rows` tokens have a row in `kept`.
  auto rows_kept = [&](const at::Tensor& kept, int64_t rows) -> int64_t {
    if (!kept.defined()) return 0;
    return std::max<int64_t>(0, std::min(kept.size(0) - block_start, rows));
  };
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
    if (const int64_t n = rows_kept(a.inputs, x.size(0)); n > 0)
      a.inputs.narrow(0, block_start, n).copy_(x.narrow(0, 0, n));
    if (const int64_t n = rows_kept(a.gram, x.size(0)); n > 0) {
      const at::Tensor yk = y.narrow(0, 0, n).to(at::kDouble);
      a.gram.narrow(0, block_start, n).copy_(at::bmm(yk, yk.transpose(1, 2)));
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
    if (const int64_t n = rows_kept(a.logits, logits.size(0)); n > 0)
      a.logits.narrow(0, block_start, n).copy_(ev.tensor.narrow(0, 0, n));
  });

  {
    at::NoGradGuard no_grad;
    model.eval();
    // The bar counts the job's tokens (another rank's block counts as done when this rank passes it).
    Progress bar("calibrate", out.tokens, "tok");
    int64_t blocks_run = 0;
    for (int64_t b = 0; b < out.blocks; ++b) {
      if (o.sharding.owns(b)) {
        block_start = b * out.seq_len;
        std::vector<int64_t> ids(stream.begin() + b * out.seq_len, stream.begin() + (b + 1) * out.seq_len);
        model.forward_hidden(at::tensor(ids, at::kLong).unsqueeze(0));
        ++blocks_run;
      }
      bar.advance(out.seq_len);
    }
    bar.finish();
    if (o.sharding.active())
      log_debug("calibrate: rank ", o.sharding.rank(), " of ", o.sharding.world_size(), " ran ", blocks_run, " of ",
                out.blocks, " blocks");
  }
  model.hooks().remove(h_in);
  model.hooks().remove(h_logits);
  // Data parallel: every rank's sums, and the kept rows from the ranks that ran their blocks.
  for (auto& entry : acc) {
    Acc& a = entry.second;
    o.sharding.sum({a.out_sum, a.counts, a.probs, a.reap_sum, a.logit_gram, a.inputs, a.logits, a.gram});
  }

  for (auto& [layer, a] : acc) {
    LayerCalibration lc;
    lc.layer = layer;
    lc.mean_output = (a.out_sum / static_cast<double>(out.tokens)).to(at::kFloat);
    lc.frequency = a.counts / a.counts.sum();
    lc.soft_score = a.probs / a.probs.sum();
    lc.reap = a.reap_sum / a.counts.clamp_min(1.0);
    lc.logit_gram = a.logit_gram;
    lc.inputs = a.inputs;
    lc.logits = a.logits;
    lc.gram = a.gram;
    out.layers.push_back(std::move(lc));
  }
  return out;
}

}  // namespace mf
