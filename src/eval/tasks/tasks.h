// Built-in tasks, one file per task, each with lm-eval's template, split, choices, gold and metrics
// (see docs/eval.md for the data file each one reads).
#pragma once
#include <string>
#include <utility>

#include "eval/registry.h"

namespace mf::eval {

using ojson = nlohmann::ordered_json;

void register_arc(TaskRegistry& r);         // arc_easy, arc_challenge
void register_piqa(TaskRegistry& r);
void register_openbookqa(TaskRegistry& r);
void register_winogrande(TaskRegistry& r);
void register_sciq(TaskRegistry& r);
void register_social_iqa(TaskRegistry& r);
void register_boolq(TaskRegistry& r);
void register_hellaswag(TaskRegistry& r);
void register_rte(TaskRegistry& r);
void register_mmlu(TaskRegistry& r);        // 57 subjects + mmlu, mmlu_<category> groups
void register_lambada(TaskRegistry& r);     // lambada_openai
void register_wikitext(TaskRegistry& r);

// Metric lists used by many tasks.
MetricSpec metric_acc();
MetricSpec metric_acc_norm();
// metric_list entries as lm-eval's YAML writes them: {metric, aggregation, higher_is_better}, or
// {metric} alone (boolq, rte, wikitext).
ojson lm_metric(const std::string& name, const std::string& aggregation, bool higher_is_better);
ojson lm_metric(const std::string& name);

// lm-eval hellaswag preprocess() (exposed for tests).
std::string hellaswag_preprocess(const std::string& text);
// (ctx_a, ctx_b) of a HellaSwag ctx that comes without them. The dataset writes ctx = ctx_a + " " +
// ctx_b when ctx_b (the unfinished phrase that starts the last sentence, ActivityNet) is not empty,
// else ctx = ctx_a (WikiHow). So a ctx that ends a sentence (. ! ? before closing quotes) has
// ctx_b = ""; otherwise ctx_b is what follows the last sentence end (". ", "! ", "? ").
std::pair<std::string, std::string> hellaswag_split_ctx(const std::string& ctx);

// The 57 MMLU subjects in alphabetical order.
std::vector<std::string> mmlu_subjects();

}  // namespace mf::eval
