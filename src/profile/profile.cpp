// Orchestration of `moeforge profile`: data → samples → domains → profiling pass → directory.
#include "profile/profile.h"

#include <torch/torch.h>

#include <chrono>
#include <map>

#include "io/checkpoint.h"
#include "model/model.h"
#include "profile/calibration_data.h"
#include "profile/domains.h"
#include "profile/profiler.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/str.h"

namespace mf {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string tensor_key(int layer, const char* what) { return cat("layers.", layer, ".", what); }

}  // namespace

std::vector<int> parse_profile_layers(const std::string& spec_in, int64_t num_layers) {
  const std::string spec = trim(spec_in);
  int64_t a = 0, b = num_layers;
  if (!spec.empty()) {
    auto colon = spec.find(':');
    if (colon == std::string::npos || spec.find(':', colon + 1) != std::string::npos)
      throw UsageError("--layers must look like a:b (python-style, 0-based, end exclusive), got '" + spec + "'");
    auto parse = [&](const std::string& s, int64_t fallback) -> int64_t {
      std::string t = trim(s);
      if (t.empty()) return fallback;
      size_t used = 0;
      int64_t v = 0;
      try {
        v = std::stoll(t, &used);
      } catch (...) {
        used = 0;
      }
      if (used != t.size()) throw UsageError("--layers: '" + t + "' is not an integer");
      if (v < 0) v += num_layers;
      return std::min(std::max<int64_t>(v, 0), num_layers);
    };
    a = parse(spec.substr(0, colon), 0);
    b = parse(spec.substr(colon + 1), num_layers);
  }
  if (a >= b) throw UsageError(cat("--layers '", spec, "' selects no layer (the model has ", num_layers, ")"));
  std::vector<int> out;
  for (int64_t l = a; l < b; ++l) out.push_back(static_cast<int>(l));
  return out;
}

json run_profile(Model& model, const Tokenizer& tok, const ProfileOptions& o) {
  const auto t_start = std::chrono::steady_clock::now();
  const ModelConfig& cfg = model.config();
  if (!o.domain_field.empty() && o.domains > 0) throw UsageError("--domain-field and --domains exclude each other");
  if (o.seq_len < 2) throw UsageError("--seq-len must be at least 2");
  if (o.batch_tokens < 1) throw UsageError("--batch-tokens must be positive");
  const std::vector<int> layers = parse_profile_layers(o.layers, cfg.num_layers);
  const FfnKind kind = profile_ffn_kind(cfg, layers);
  if (!o.embeddings_path.empty() && !o.domain_field.empty())
    throw UsageError("--embeddings is for k-means domains; it cannot be combined with --domain-field");

  // ---- data ----
  auto t = std::chrono::steady_clock::now();
  std::vector<CalibrationDoc> docs = read_calibration_jsonl(o.data_path, o.domain_field, !o.domain_field.empty());
  const int64_t docs_in_file = static_cast<int64_t>(docs.size());
  if (o.max_docs > 0 && static_cast<int64_t>(docs.size()) > o.max_docs) docs.resize(o.max_docs);
  std::vector<Sample> samples = tokenize_calibration(docs, tok, o.seq_len);
  if (o.max_tokens > 0) {
    int64_t total = 0;
    size_t keep = 0;
    while (keep < samples.size() && (keep == 0 || total + static_cast<int64_t>(samples[keep].ids.size()) <= o.max_tokens)) {
      total += static_cast<int64_t>(samples[keep].ids.size());
      ++keep;
    }
    samples.resize(keep);
    docs.resize(keep);
  }
  const double t_data = seconds_since(t);
  const int64_t n = static_cast<int64_t>(samples.size());

  // ---- domains ----
  std::string source;
  std::vector<std::string> names;
  std::vector<int32_t> dom(n, 0);
  double t_embed = 0, t_cluster = 0;
  json kmeans_info;
  int64_t with_field = 0;
  for (const auto& d : docs) with_field += d.has_domain ? 1 : 0;
  const bool use_labels = !o.domain_field.empty() || (o.domains == 0 && o.embeddings_path.empty() && with_field > 0);
  if (use_labels) {
    if (with_field < n)
      for (const auto& d : docs)
        if (!d.has_domain)
          fail(cat(o.data_path, ":", d.line,
                   ": no field 'domain' while other lines have one (pass --domains K to cluster instead)"));
    std::vector<std::string> labels;
    for (const auto& d : docs) labels.push_back(d.domain);
    dom = domains_from_labels(labels, &names);
    source = "field:" + (o.domain_field.empty() ? std::string("domain") : o.domain_field);
  } else {
    const int k = o.domains > 0 ? o.domains : 8;
    if (k > n) fail(cat(o.data_path, ": ", k, " k-means domains need at least ", k, " documents, got ", n));
    at::Tensor emb;
    if (!o.embeddings_path.empty()) {
      emb = read_embeddings_file(o.embeddings_path);
      if (emb.size(0) != docs_in_file)
        fail_file(o.embeddings_path, cat("has ", emb.size(0), " rows but ", o.data_path, " has ", docs_in_file,
                                         " documents (one row per document)"));
      emb = emb.slice(0, 0, n);
      source = "kmeans:file";
    } else {
      t = std::chrono::steady_clock::now();
      Progress bar("embed", n, "doc");
      emb = mean_pooled_embeddings(model, samples, o.batch_tokens, [&](int64_t done) { bar.set(done); }, o.sharding);
      bar.finish();
      t_embed = seconds_since(t);
      source = "kmeans:model";
    }
    t = std::chrono::steady_clock::now();
    if (k == 1) {
      names = {"0"};
    } else {
      KMeansResult km = domain_kmeans(l2_normalize_rows(emb), k, o.seed, o.kmeans_max_iter);
      dom = km.labels;
      kmeans_info = {{"k", k}, {"iterations", km.iterations}, {"inertia", km.inertia}, {"seed", o.seed}};
      for (int j = 0; j < k; ++j) names.push_back(std::to_string(j));
    }
    t_cluster = seconds_since(t);
  }
  const int D = static_cast<int>(names.size());
  for (int64_t i = 0; i < n; ++i) samples[i].domain = dom[i];

  // ---- profiling pass ----
  t = std::chrono::steady_clock::now();
  auto batches = make_length_batches(samples, o.batch_tokens);
  int64_t scored_docs = 0, total_tokens = 0;
  for (const auto& b : batches) scored_docs += static_cast<int64_t>(b.size());
  for (const auto& s : samples) total_tokens += static_cast<int64_t>(s.ids.size());
  if (scored_docs == 0)
    fail_file(o.data_path, "no document has a token to score (texts need at least 2 tokens, SFT lines a response)");
  std::vector<LayerProfile> results;
  int64_t profiled_tokens = 0;
  {
    Profiler profiler(model, layers, D, o.coactivation);
    // Data parallel: batch j is this rank's when o.sharding.owns(j); the bar counts the job's
    // documents (another rank's batch counts as done when this rank passes it).
    Progress bar("profile", scored_docs, "doc");
    for (size_t j = 0; j < batches.size(); ++j) {
      if (o.sharding.owns(static_cast<int64_t>(j))) profiler.run(samples, batches[j]);
      bar.advance(static_cast<int64_t>(batches[j].size()));
      const double el = bar.elapsed_seconds();
      if (el > 0) bar.set_postfix(cat(static_cast<int64_t>(profiler.tokens() / el), " tok/s"));
    }
    bar.finish();
    if (o.sharding.active())
      log_debug("profile: rank ", o.sharding.rank(), " of ", o.sharding.world_size(), " ran ", profiler.samples(), " of ",
                scored_docs, " documents");
    profiler.sum_over_ranks(o.sharding);  // before results(): they normalise the sums
    results = profiler.results();
    profiled_tokens = profiler.tokens();
  }
  const double t_profile = seconds_since(t);
  o.sharding.finish();  // the ranks' shared work is done; rank 0 alone writes

  // ---- record ----
  std::vector<int64_t> sizes(D, 0), scored_sizes(D, 0);
  for (const auto& s : samples) {
    ++sizes[s.domain];
    if (s.loss_tokens() > 0) ++scored_sizes[s.domain];
  }
  std::string config_sha;
  const std::string config_path = path_join(o.model_path, "config.json");
  if (!o.model_path.empty() && path_exists(config_path)) config_sha = sha256_file(config_path);
  json layer_summary = json::array();
  for (const auto& r : results)
    layer_summary.push_back({{"layer", r.layer},
                             {"importance_raw_mean", r.importance_raw.mean().item<double>()},
                             {"importance_mean", r.importance.mean().item<double>()},
                             {"act_abs_mean", r.act_abs_mean.mean().item<double>()},
                             {"act_pos_frac", r.act_pos_frac.mean().item<double>()},
                             {"tokens", r.tokens}});
  json info = {{"format", "moeforge-profile"},
               {"version", 1},
               {"model", o.model_path},
               {"model_config_sha256", config_sha},
               {"model_type", cfg.model_type},
               {"data", o.data_path},
               {"data_sha256", sha256_file(o.data_path)},
               {"documents", n},
               {"scored_documents", scored_docs},
               {"tokens", total_tokens},
               {"profiled_tokens", profiled_tokens},
               {"domains", D},
               {"domain_names", names},
               {"domain_sizes", sizes},
               {"domain_scored_sizes", scored_sizes},
               {"domain_source", source},
               {"layers", layers},
               {"ffn_kind", ffn_kind_name(kind)},
               {"hidden_act", cfg.hidden_act},
               {"intermediate_size", cfg.intermediate_size},
               {"coactivation", o.coactivation},
               {"coactivation_rule", cfg.hidden_act == "relu" ? "values" : "indicator a>0"},
               {"settings",
                {{"seq_len", o.seq_len},
                 {"batch_tokens", o.batch_tokens},
                 {"max_docs", o.max_docs},
                 {"max_tokens", o.max_tokens},
                 {"seed", o.seed},
                 {"dtype", o.dtype},
                 {"embeddings", o.embeddings_path},
                 {"domain_field", o.domain_field}}},
               {"layer_summary", layer_summary},
               {"timings",
                {{"data_s", t_data},
                 {"embed_s", t_embed},
                 {"cluster_s", t_cluster},
                 {"profile_s", t_profile},
                 {"profile_tokens_per_s", t_profile > 0 ? profiled_tokens / t_profile : 0.0}}}};
  if (!kmeans_info.is_null()) info["kmeans"] = kmeans_info;
  if (!o.sharding.writer()) return info;

  // ---- write ----
  t = std::chrono::steady_clock::now();
  AtomicDir out(o.out_dir);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& r : results) {
    tensors.emplace_back(tensor_key(r.layer, "importance_raw"), r.importance_raw);
    tensors.emplace_back(tensor_key(r.layer, "importance"), r.importance);
    tensors.emplace_back(tensor_key(r.layer, "act_mean"), r.act_mean);
    tensors.emplace_back(tensor_key(r.layer, "act_abs_mean"), r.act_abs_mean);
    tensors.emplace_back(tensor_key(r.layer, "act_pos_frac"), r.act_pos_frac);
    if (r.coactivation.defined()) tensors.emplace_back(tensor_key(r.layer, "coactivation"), r.coactivation);
  }
  save_safetensors(path_join(out.path(), "profile.safetensors"), tensors);
  std::string lines;
  for (int64_t i = 0; i < n; ++i) {
    json l = {{"index", i},
              {"domain", samples[i].domain},
              {"tokens", samples[i].ids.size()},
              {"loss_tokens", samples[i].loss_tokens()}};
    lines += l.dump() + "\n";
  }
  write_file_atomic(path_join(out.path(), "domains.jsonl"), lines);
  info["timings"]["write_s"] = seconds_since(t);
  info["timings"]["total_s"] = seconds_since(t_start);
  write_json_file(path_join(out.path(), "profile.json"), info);
  out.commit();
  return info;
}

// ---------------------------------------------------------------------------------------------
// Reading

const ProfileLayerData* ProfileData::find(int layer) const {
  for (const auto& l : layers)
    if (l.layer == layer) return &l;
  return nullptr;
}

ProfileData read_profile(const std::string& dir) {
  if (!is_directory(dir)) fail_file(dir, "not a profile directory (run moeforge profile)");
  ProfileData p;
  p.dir = dir;
  const std::string js = path_join(dir, "profile.json");
  const std::string st = path_join(dir, "profile.safetensors");
  const std::string dj = path_join(dir, "domains.jsonl");
  if (!path_exists(js)) fail_file(js, "no such file (not a profile directory; run moeforge profile)");
  if (!path_exists(st)) fail_file(st, "no such file (run moeforge profile)");
  p.info = read_json_file(js);
  p.num_domains = json_get<int64_t>(p.info, "domains", js);
  p.intermediate_size = json_get<int64_t>(p.info, "intermediate_size", js);
  if (p.num_domains < 1) fail_file(js, "key 'domains' must be >= 1");
  if (p.intermediate_size < 1) fail_file(js, "key 'intermediate_size' must be >= 1");
  if (p.info.contains("domain_names")) {
    const json& names = p.info["domain_names"];
    if (!names.is_array() || static_cast<int64_t>(names.size()) != p.num_domains)
      fail_file(js, "key 'domain_names' must be an array of 'domains' strings");
    for (const auto& n : names) {
      if (!n.is_string()) fail_file(js, "key 'domain_names' must be an array of 'domains' strings");
      p.domain_names.push_back(n.get<std::string>());
    }
  }
  if (!p.info.contains("layers") || !p.info["layers"].is_array()) fail_file(js, "missing key 'layers' (an array)");
  std::vector<int> layers;
  for (const auto& l : p.info["layers"]) {
    if (!l.is_number_integer() || l.get<int64_t>() < 0) fail_file(js, "key 'layers' must hold layer indices");
    layers.push_back(l.get<int>());
  }
  const bool coact = json_get_or<bool>(p.info, "coactivation", false, js);
  auto file = SafetensorsFile::open(st);
  const int64_t F = p.intermediate_size, D = p.num_domains;
  auto get = [&](int layer, const char* what, std::vector<int64_t> shape) {
    const std::string name = tensor_key(layer, what);
    const StTensorInfo* info = file->find(name);
    if (!info) fail_file(st, "no tensor " + name);
    if (info->shape != shape)
      fail_file(st, cat("tensor ", name, " has shape ", at::IntArrayRef(info->shape), ", expected ", at::IntArrayRef(shape)));
    at::Tensor t = file->get(name, at::kFloat).clone();
    if (!at::isfinite(t).all().item<bool>()) fail_file(st, "tensor " + name + " holds NaN or infinite values");
    return t;
  };
  for (int l : layers) {
    ProfileLayerData d;
    d.layer = l;
    d.importance_raw = get(l, "importance_raw", {F, D});
    d.importance = get(l, "importance", {F, D});
    d.act_mean = get(l, "act_mean", {F});
    d.act_abs_mean = get(l, "act_abs_mean", {F});
    d.act_pos_frac = get(l, "act_pos_frac", {F});
    if (coact) d.coactivation = get(l, "coactivation", {F, F});
    p.layers.push_back(std::move(d));
  }
  if (path_exists(dj)) {
    for_each_jsonl_object(dj, [&](const json& j, int64_t line_no) {
      const std::string origin = cat(dj, ":", line_no);
      const int64_t domain = json_get<int64_t>(j, "domain", origin);
      if (domain < 0 || domain >= D) fail_file(origin, cat("domain ", domain, " out of range"));
      p.document_domains.push_back(static_cast<int32_t>(domain));
      return true;
    });
  }
  return p;
}

}  // namespace mf
