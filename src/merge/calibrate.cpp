#include "merge/calibrate.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "model/model.h"
#include "model/moe_ffn.h"
#include "moe/kernels.h"
#include "profile/calibration_data.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/str.h"

namespace mf {

namespace {

// An expert's gate and up weights as one [2f, d] tensor: a view when the block already keeps them
// fused (MoeFFN's inference layout: up's rows right after gate's), else a copy.
at::Tensor fused_gate_up(const GatedMLP& e) {
  const at::Tensor& g = e.gate->weight;
  const at::Tensor& u = e.up->weight;
  const int64_t f = g.size(0), d = g.size(1);
  if (g.is_contiguous() && u.is_contiguous() && g.is_alias_of(u) && u.scalar_type() == g.scalar_type() &&
      static_cast<const char*>(u.data_ptr()) == static_cast<const char*>(g.data_ptr()) + f * d * g.element_size())
    return g.as_strided({2 * f, d}, {d, 1});
  return at::cat({g, u}, 0);
}

// Column sums (into sum, fp64 [d]) and row L2 norms (into norm, fp64 [T], strided) of a bf16
// [T, d] matrix in one pass: fp32 within chunks of rows, fp64 across them.
void bf16_sums_and_norms(const at::Tensor& y, double* sum, double* norm, int64_t norm_stride) {
  const int64_t T = y.size(0), d = y.size(1), chunk = 64;
  const uint16_t* p = reinterpret_cast<const uint16_t*>(y.data_ptr());
  const int64_t chunks = (T + chunk - 1) / chunk;
  std::vector<double> partial(static_cast<size_t>(chunks * d));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> col(static_cast<size_t>(d));
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(col.begin(), col.end(), 0.0f);
      for (int64_t t = c * chunk; t < std::min(T, (c + 1) * chunk); ++t) {
        const uint16_t* row = p + t * d;
        float sq[16] = {0};
        int64_t j = 0;
        for (; j + 16 <= d; j += 16)
          for (int k = 0; k < 16; ++k) {
            const uint32_t bits = static_cast<uint32_t>(row[j + k]) << 16;
            float v;
            std::memcpy(&v, &bits, 4);
            col[j + k] += v;
            sq[k] += v * v;
          }
        double total = 0;
        for (; j < d; ++j) {
          const uint32_t bits = static_cast<uint32_t>(row[j]) << 16;
          float v;
          std::memcpy(&v, &bits, 4);
          col[j] += v;
          total += static_cast<double>(v) * v;
        }
        for (int k = 0; k < 16; ++k) total += sq[k];
        norm[t * norm_stride] = std::sqrt(total);
      }
      std::copy(col.begin(), col.end(), partial.begin() + c * d);
    }
  });
  for (int64_t j = 0; j < d; ++j) sum[j] = 0;
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t j = 0; j < d; ++j) sum[j] += partial[c * d + j];
}

}  // namespace

ExpertPass every_expert_pass(MoeFFN& block, const at::Tensor& x_in, int64_t keep_rows) {
  const at::Tensor x = x_in.contiguous();
  const int64_t E = block.num_experts(), T = x.size(0), d = x.size(1);
  const moe::Act act = moe_activation(block.spec().act);
  ExpertPass p;
  p.out_sum = at::empty({E, d}, at::kDouble);
  p.norms = at::empty({T, E}, at::kDouble);
  if (keep_rows > 0) p.kept = at::empty({keep_rows, E, d}, at::kDouble);
  for (int64_t e = 0; e < E; ++e) {
    const GatedMLP& ex = *block.experts[static_cast<size_t>(e)];
    // One GEMM for gate and up, the fused activation, the down GEMM: the expert as the MoE layer
    // runs it, on all T rows.
    const at::Tensor w_in = fused_gate_up(ex);
    const at::Tensor h = moe::expert_activation(at::linear(x, w_in), {}, w_in.size(0) / 2, true, act);
    const at::Tensor y = at::linear(h, ex.down->weight).contiguous();  // [T, d]
    if (y.scalar_type() == at::kBFloat16) {
      // libtorch's bf16 reductions cost as much as a third of the GEMMs here.
      bf16_sums_and_norms(y, p.out_sum[e].data_ptr<double>(), p.norms.data_ptr<double>() + e, E);
    } else {
      p.out_sum[e].copy_(at::sum(y, {0}, false, at::kDouble));
      p.norms.select(1, e).copy_(at::linalg_vector_norm(y, 2, {-1}, false, at::kDouble));
    }
    if (keep_rows > 0) p.kept.select(1, e).copy_(y.narrow(0, 0, keep_rows));
  }
  return p;
}

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
    const at::Tensor& x = ev.tensor;  // [N, d] in the model's dtype
    const ExpertPass pass = every_expert_pass(*a.block, x, rows_kept(a.gram, x.size(0)));
    a.out_sum += pass.out_sum;
    a.norms = pass.norms;
    if (const int64_t n = rows_kept(a.inputs, x.size(0)); n > 0)
      a.inputs.narrow(0, block_start, n).copy_(x.narrow(0, 0, n));
    if (pass.kept.defined())
      a.gram.narrow(0, block_start, pass.kept.size(0)).copy_(at::bmm(pass.kept, pass.kept.transpose(1, 2)));
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
