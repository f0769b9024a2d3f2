// `moeforge experts MODEL --data FILE.jsonl [--max-tokens N] [--json OUT]`: routing per domain and
// expert-output similarity of an MoE model (profile/expert_stats.h).
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "model/model.h"
#include "profile/expert_stats.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"

namespace mf::cli {

void add_experts_command(CLI::App& app, const GlobalOptions&) {
  struct Args {
    std::string model, json_path;
    ExpertStatsOptions o;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("experts", "Routing per domain and expert-output similarity of an MoE model");
  cmd->add_option("MODEL", a->model, "MoE model directory")->required();
  cmd->add_option("--data", a->o.data_files, "JSONL documents ({\"text\", \"domain\"}); several allowed")->required();
  cmd->add_option("--max-tokens", a->o.max_tokens, "tokens to run")->capture_default_str()->check(positive());
  cmd->add_option("--seq-len", a->o.seq_len, "documents are cut to this many tokens")->capture_default_str()->check(positive());
  cmd->add_option("--json", a->json_path, "also write the statistics as JSON to FILE");
  cmd->callback([a]() {
    auto model = Model::load(a->model, {at::kFloat, at::kCPU});
    auto tok = Tokenizer::load(a->model);
    ExpertStats s = expert_stats(*model, *tok, a->o);
    if (!a->json_path.empty()) write_json_file(a->json_path, expert_stats_json(s));
    std::printf("%d MoE layers, %lld tokens\n%-6s %-10s %s\n", static_cast<int>(s.layers.size()),
                static_cast<long long>(s.tokens), "layer", "mean cos", "tokens per expert (all domains)");
    for (const auto& l : s.layers) {
      std::vector<int64_t> all;
      for (const auto& [d, c] : l.tokens_per_expert) {
        if (all.empty()) all.assign(c.size(), 0);
        for (size_t e = 0; e < c.size(); ++e) all[e] += c[e];
      }
      std::printf("%-6lld %-10.4f", static_cast<long long>(l.layer), l.mean_pairwise_cosine);
      for (int64_t c : all) std::printf(" %lld", static_cast<long long>(c));
      std::printf("\n");
    }
    std::printf("mean pairwise cosine of expert outputs: %.4f\n", s.mean_pairwise_cosine);
  });
}

}  // namespace mf::cli
