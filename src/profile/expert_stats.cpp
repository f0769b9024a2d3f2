#include "profile/expert_stats.h"

#include <cmath>

#include "model/model.h"
#include "model/moe_ffn.h"
#include "profile/calibration_data.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/progress.h"

namespace mf {

ExpertStats expert_stats(Model& model, const Tokenizer& tok, const ExpertStatsOptions& o) {
  const ModelConfig& cfg = model.config();
  if (!cfg.is_moe()) fail_file(cfg.origin, "not an MoE model (model_type " + cfg.model_type + ")");
  std::vector<CalibrationDoc> docs;
  for (const auto& f : o.data_files)
    for (auto& d : read_calibration_jsonl(f, "", false)) docs.push_back(std::move(d));
  const std::vector<Sample> samples = tokenize_calibration(docs, tok, o.seq_len);

  struct Acc {
    std::shared_ptr<MoeFFN> block;
    at::Tensor sum;  // [E, H] fp64
    std::map<std::string, std::vector<int64_t>> counts;
  };
  std::map<int, Acc> acc;
  for (int64_t l = 0; l < cfg.num_layers; ++l)
    if (auto b = std::dynamic_pointer_cast<MoeFFN>(model.ffn(l)))
      acc[static_cast<int>(l)] = {b, at::zeros({b->num_experts(), cfg.hidden_size}, at::kDouble), {}};
  if (acc.empty()) fail_file(cfg.origin, "the model has no routed MoE layer");

  std::string domain;
  const int h1 = model.hooks().add(HookPoint::ffn_input, [&](HookEvent& ev) {
    auto it = acc.find(ev.layer);
    if (it == acc.end()) return;
    Acc& a = it->second;
    for (int64_t e = 0; e < a.block->num_experts(); ++e)
      a.sum[e] += a.block->experts[static_cast<size_t>(e)]->forward(ev.tensor, nullptr).to(at::kDouble).sum(0);
  });
  const int h2 = model.hooks().add(HookPoint::router_logits, [&](HookEvent& ev) {
    auto it = acc.find(ev.layer);
    if (it == acc.end()) return;
    auto& c = it->second.counts[domain];
    if (c.empty()) c.assign(static_cast<size_t>(it->second.block->num_experts()), 0);
    const at::Tensor idx = std::get<1>(ev.tensor.topk(cfg.num_experts_per_tok, -1)).reshape({-1}).contiguous();
    const int64_t* p = idx.data_ptr<int64_t>();
    for (int64_t i = 0; i < idx.numel(); ++i) ++c[static_cast<size_t>(p[i])];
  });

  ExpertStats out;
  {
    at::NoGradGuard no_grad;
    model.eval();
    Progress bar("experts", o.max_tokens, "tok");
    for (const Sample& s : samples) {
      if (out.tokens >= o.max_tokens) break;
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(s.ids.size()), o.max_tokens - out.tokens);
      if (n == 0) continue;
      domain = docs[static_cast<size_t>(s.index)].has_domain ? docs[static_cast<size_t>(s.index)].domain : "default";
      model.forward_hidden(at::tensor(std::vector<int64_t>(s.ids.begin(), s.ids.begin() + n), at::kLong).unsqueeze(0));
      out.tokens += n;
      bar.advance(n);
    }
    bar.finish();
  }
  model.hooks().remove(h1);
  model.hooks().remove(h2);
  if (out.tokens == 0) fail_file(o.data_files.front(), "no tokens");

  double total = 0;
  for (auto& [layer, a] : acc) {
    LayerExpertStats ls;
    ls.layer = layer;
    ls.tokens_per_expert = a.counts;
    ls.mean_output = (a.sum / static_cast<double>(out.tokens)).to(at::kFloat);
    const at::Tensor unit = a.sum / a.sum.norm(2, 1, true).clamp_min(1e-300);
    ls.cosine = at::matmul(unit, unit.t());
    const int64_t E = a.block->num_experts();
    double sum = 0;
    for (int64_t i = 0; i < E; ++i)
      for (int64_t j = i + 1; j < E; ++j) sum += ls.cosine[i][j].item<double>();
    ls.mean_pairwise_cosine = E > 1 ? sum / static_cast<double>(E * (E - 1) / 2) : 1.0;
    total += ls.mean_pairwise_cosine;
    out.layers.push_back(std::move(ls));
  }
  out.mean_pairwise_cosine = total / static_cast<double>(out.layers.size());
  return out;
}

json expert_stats_json(const ExpertStats& s) {
  auto round4 = [](double v) { return std::round(v * 1e4) / 1e4; };
  json j = {{"tokens", s.tokens}, {"mean_pairwise_cosine", round4(s.mean_pairwise_cosine)}, {"layers", json::array()}};
  for (const auto& l : s.layers) {
    json cos = json::array();
    for (int64_t i = 0; i < l.cosine.size(0); ++i) {
      json row = json::array();
      for (int64_t k = 0; k < l.cosine.size(1); ++k) row.push_back(round4(l.cosine[i][k].item<double>()));
      cos.push_back(row);
    }
    j["layers"].push_back({{"layer", l.layer},
                           {"tokens_per_expert", l.tokens_per_expert},
                           {"mean_pairwise_cosine", round4(l.mean_pairwise_cosine)},
                           {"cosine", cos}});
  }
  return j;
}

}  // namespace mf
