// moeforge profile: the one-backward closed-form neuron importance against the autograd
// weight-gradient form (spec dense_to_moe.md §1.2 (c), acceptance item 27), preprocessing,
// k-means domains, co-activation counts, activation statistics, input errors and the CLI.
#include <gtest/gtest.h>

#include "spm_llama_fixture.h"
#include <sys/wait.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstdio>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model_fixtures.h"
#include "profile/activation_stats.h"
#include "profile/calibration_data.h"
#include "profile/coactivation.h"
#include "profile/domains.h"
#include "profile/importance.h"
#include "profile/profile.h"
#include "profile/profiler.h"
#include "test_helpers.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/rng.h"

using namespace mf;
using mf::testing_helpers::error_of;

namespace {

Sample make_sample(std::vector<int64_t> ids, int64_t loss_begin = 1) {
  Sample s;
  s.ids = std::move(ids);
  s.loss_begin = loss_begin;
  return s;
}

std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(static_cast<int64_t>(rng.below(vocab)));
  return v;
}

at::Tensor param(Model& m, const std::string& name) {
  auto params = m.named_parameters();
  const at::Tensor* p = params.find(name);
  if (!p) throw std::runtime_error("no parameter " + name);
  return *p;
}

// Σ over the neuron's weights of W·∂ℓ/∂W (before abs) from the parameters' .grad(), [F].
at::Tensor weight_form(Model& m, int layer) {
  if (m.config().family == Family::gpt2) {
    const std::string p = "transformer.h." + std::to_string(layer) + ".mlp.";
    at::Tensor w1 = param(m, p + "c_fc.weight"), w2 = param(m, p + "c_proj.weight");  // [H, F], [F, H]
    return (w1 * w1.grad()).sum(0) + (w2 * w2.grad()).sum(1);
  }
  const std::string p = "model.layers." + std::to_string(layer) + ".mlp.";
  at::Tensor g = param(m, p + "gate_proj.weight"), u = param(m, p + "up_proj.weight");  // [F, H]
  at::Tensor d = param(m, p + "down_proj.weight");                                       // [H, F]
  return (g * g.grad()).sum(1) + (u * u.grad()).sum(1) + (d * d.grad()).sum(0);
}

void zero_grads(Model& m) {
  for (auto& p : m.parameters())
    if (p.grad().defined()) p.mutable_grad().zero_();
}

// Closed form from one batched backward vs the weight-gradient form from one backward per
// sample, for every layer and every sample of a padded batch.
void check_closed_form(const std::string& family) {
  auto m = testing_fixtures::tiny_model(family, 7, 0.2);
  for (auto& p : m->parameters()) p.set_requires_grad(true);
  const int64_t V = m->config().vocab_size;
  std::vector<Sample> samples = {make_sample(random_ids(11, V, 1)), make_sample(random_ids(6, V, 2), 3),
                                 make_sample(random_ids(9, V, 3))};
  std::vector<int> layers = {0, 1};
  std::vector<at::Tensor> expect[2];
  for (size_t s = 0; s < samples.size(); ++s) {
    zero_grads(*m);
    calibration_loss(*m, pad_batch(samples, {static_cast<int64_t>(s)})).backward();
    for (int l : layers) expect[l].push_back(weight_form(*m, l).detach().clone());
  }
  ImportanceCollector col(*m, layers);
  EXPECT_EQ(col.kind(), family == "gpt2" ? FfnKind::two_matrix : FfnKind::gated);
  PaddedBatch pb = pad_batch(samples, {0, 1, 2});
  ASSERT_TRUE(pb.mask.defined());
  zero_grads(*m);
  col.begin_batch(pb.ids.size(0), pb.ids.size(1));
  calibration_loss(*m, pb).backward();
  for (int l : layers) {
    at::Tensor got = col.signed_scores(static_cast<size_t>(l));
    ASSERT_EQ(got.sizes(), (at::IntArrayRef{3, m->config().intermediate_size}));
    for (size_t s = 0; s < samples.size(); ++s) {
      at::Tensor e = expect[l][s];
      const double scale = e.abs().max().item<double>();
      ASSERT_GT(scale, 0);
      EXPECT_LT((got[s] - e).abs().max().item<double>(), 2e-5 * scale) << family << " layer " << l << " sample " << s;
    }
  }
}

}  // namespace

TEST(ProfileImportance, SwigluClosedFormEqualsWeightGradients) { check_closed_form("llama"); }
TEST(ProfileImportance, Gpt2TwoMatrixFormEqualsWeightGradients) { check_closed_form("gpt2"); }

TEST(ProfileImportance, ProfilerNeedsNoParameterGradients) {
  // With every parameter frozen (as the profiler runs), the closed form still sees all layers
  // and equals the weight form computed with gradients on.
  auto m = testing_fixtures::tiny_model("qwen2", 3, 0.2);
  std::vector<Sample> samples = {make_sample(random_ids(8, 64, 9))};
  samples[0].domain = 1;
  for (auto& p : m->parameters()) p.set_requires_grad(true);
  calibration_loss(*m, pad_batch(samples, {0})).backward();
  at::Tensor w0 = weight_form(*m, 0).abs(), w1 = weight_form(*m, 1).abs();
  for (auto& p : m->parameters()) {
    p.mutable_grad().zero_();
    p.set_requires_grad(false);
  }
  std::vector<LayerProfile> r;
  {
    Profiler prof(*m, {0, 1}, 2, false);
    prof.run(samples, {0});
    r = prof.results();
  }
  for (auto& p : m->parameters()) {
    EXPECT_FALSE(p.requires_grad());
    EXPECT_EQ(p.grad().abs().sum().item<double>(), 0.0);  // no weight gradient was computed
  }
  ASSERT_EQ(r.size(), 2u);
  EXPECT_TRUE(r[0].importance_raw.select(1, 0).eq(0).all().item<bool>());
  EXPECT_TRUE(at::allclose(r[0].importance_raw.select(1, 1), w0, 1e-4, 1e-6));
  EXPECT_TRUE(at::allclose(r[1].importance_raw.select(1, 1), w1, 1e-4, 1e-6));
}

TEST(ProfileImportance, Log1pAndGlobalPerDomainNorm) {
  // Layer 0 (F=2), layer 1 (F=1), D=3. log1p values: column 0 = {3, 4 | 0} -> norm 5;
  // column 1 = {0, 1 | 1} -> norm sqrt(2); column 2 all zero -> stays zero.
  const double e = std::exp(1.0);
  at::Tensor l0 = at::tensor({std::exp(3.0) - 1, 0.0, 0.0, std::exp(4.0) - 1, e - 1, 0.0}, at::kDouble).view({2, 3});
  at::Tensor l1 = at::tensor({0.0, e - 1, 0.0}, at::kDouble).view({1, 3});
  auto out = preprocess_importance({l0.to(at::kFloat), l1.to(at::kFloat)});
  ASSERT_EQ(out.size(), 2u);
  const double r2 = 1 / std::sqrt(2.0);
  at::Tensor want0 = at::tensor({0.6, 0.0, 0.0, 0.8, r2, 0.0}, at::kFloat).view({2, 3});
  at::Tensor want1 = at::tensor({0.0, r2, 0.0}, at::kFloat).view({1, 3});
  EXPECT_TRUE(at::allclose(out[0], want0, 1e-5, 1e-6)) << out[0];
  EXPECT_TRUE(at::allclose(out[1], want1, 1e-5, 1e-6)) << out[1];
}

TEST(ProfileDomains, KMeansFindsObviousClusters) {
  Rng rng(5);
  const double centres[3][2] = {{10, 0}, {0, 10}, {-10, -10}};
  std::vector<float> data;
  std::vector<int> truth;
  for (int i = 0; i < 60; ++i) {
    int c = (i * 7) % 3;
    truth.push_back(c);
    data.push_back(static_cast<float>(centres[c][0] + 0.5 * rng.normal()));
    data.push_back(static_cast<float>(centres[c][1] + 0.5 * rng.normal()));
  }
  at::Tensor x = at::tensor(data, at::kFloat).view({60, 2});
  for (uint64_t seed : {1, 2, 3}) {
    KMeansResult r = domain_kmeans(x, 3, seed);
    ASSERT_EQ(r.labels.size(), 60u);
    int map[3] = {-1, -1, -1};
    for (int i = 0; i < 60; ++i) {
      if (map[truth[i]] < 0) map[truth[i]] = r.labels[i];
      EXPECT_EQ(r.labels[i], map[truth[i]]) << "point " << i << " seed " << seed;
    }
    EXPECT_NE(map[0], map[1]);
    EXPECT_NE(map[1], map[2]);
    EXPECT_NE(map[0], map[2]);
    EXPECT_LT(r.inertia, 60 * 4 * 0.5 * 0.5);
    KMeansResult again = domain_kmeans(x, 3, seed);
    EXPECT_EQ(again.labels, r.labels);
  }
  EXPECT_NE(error_of([&] { domain_kmeans(x.slice(0, 0, 2), 3, 1); }).find("at least 3"), std::string::npos);
}

TEST(ProfileDomains, LabelsMapToSortedIds) {
  std::vector<std::string> names;
  auto ids = domains_from_labels({"math", "code", "math", "bio"}, &names);
  EXPECT_EQ(names, (std::vector<std::string>{"bio", "code", "math"}));
  EXPECT_EQ(ids, (std::vector<int32_t>{2, 1, 2, 0}));
}

TEST(ProfileDomains, ReadsNpyAndSafetensorsEmbeddings) {
  const std::string dir = ::testing::TempDir() + "/mf_profile_emb";
  remove_all(dir);
  make_dirs(dir);
  // A hand-written .npy v1.0 file: float32 [2, 3].
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string npy = std::string("\x93NUMPY\x01\x00", 8);
  npy += static_cast<char>(header.size() & 0xff);
  npy += static_cast<char>(header.size() >> 8);
  npy += header;
  const float vals[6] = {1, 2, 3, 4, 5, 6};
  npy.append(reinterpret_cast<const char*>(vals), sizeof(vals));
  write_file_atomic(dir + "/e.npy", npy);
  at::Tensor t = read_embeddings_file(dir + "/e.npy");
  EXPECT_TRUE(at::equal(t, at::arange(1, 7, at::kFloat).view({2, 3})));
  save_safetensors(dir + "/e.safetensors", {{"embeddings", at::ones({4, 2})}});
  EXPECT_EQ(read_embeddings_file(dir + "/e.safetensors").sizes(), (at::IntArrayRef{4, 2}));
  write_file_atomic(dir + "/bad.npy", "not numpy");
  EXPECT_EQ(error_of([&] { read_embeddings_file(dir + "/bad.npy"); }), dir + "/bad.npy: not a .npy file");
}

TEST(ProfileCoactivation, IndicatorCountsHandDerived) {
  // Group 1 = tokens 0..7, group 2 = tokens 8..9 (see the derivation in the comments).
  std::vector<float> rows(10 * 3, -1.0f);
  auto set = [&](int t, float a, float b, float c) {
    rows[t * 3] = a, rows[t * 3 + 1] = b, rows[t * 3 + 2] = c;
  };
  set(0, 1, -1, 2);     // fires {0, 2}
  set(1, 0.5, 3, -1);   // fires {0, 1}
  set(8, -1, 1, 1);     // fires {1, 2}
  Coactivation co(3, /*values=*/false);
  co.add(at::tensor(rows, at::kFloat).view({10, 3}));
  // group 1: min(1, {0,2}{0,2}ᵀ + {0,1}{0,1}ᵀ) = [[1,1,1],[1,1,0],[1,0,1]]; group 2: [[0,0,0],[0,1,1],[0,1,1]]
  at::Tensor want = at::tensor({1, 1, 1, 1, 2, 1, 1, 1, 2}, at::kFloat).view({3, 3});
  EXPECT_TRUE(at::equal(co.counts(), want)) << co.counts();
  EXPECT_EQ(co.groups(), 2);
}

TEST(ProfileCoactivation, ReluValuesClampPerGroup) {
  at::Tensor a = at::tensor({0.5f, 0.f, 0.2f, 0.1f, 0.3f, 0.f, 2.f, 0.f, 0.f}, at::kFloat).view({3, 3});
  Coactivation co(3, /*values=*/true);
  co.add(a);
  // Σ a aᵀ = [[4.26, .03, .1], [.03, .09, 0], [.1, 0, .04]], clamped at 1.
  at::Tensor want = at::tensor({1.f, .03f, .1f, .03f, .09f, 0.f, .1f, 0.f, .04f}, at::kFloat).view({3, 3});
  EXPECT_TRUE(at::allclose(co.counts(), want, 1e-5, 1e-6)) << co.counts();
}

TEST(ProfileStats, MeansOverRealTokens) {
  ActivationStats st(2);
  at::Tensor a = at::tensor({1.f, -2.f, 3.f, 4.f, 100.f, 100.f}, at::kFloat).view({3, 2});
  at::Tensor valid = at::tensor({1, 1, 0}, at::kLong).to(at::kBool);
  st.add(a, valid);
  st.add(at::tensor({-1.f, 0.f}, at::kFloat).view({1, 2}));
  EXPECT_EQ(st.tokens(), 3);
  EXPECT_TRUE(at::allclose(st.mean(), at::tensor({1.f, 2.f / 3}, at::kFloat)));
  EXPECT_TRUE(at::allclose(st.abs_mean(), at::tensor({5.f / 3, 2.f}, at::kFloat)));
  EXPECT_TRUE(at::allclose(st.positive_fraction(), at::tensor({2.f / 3, 1.f / 3}, at::kFloat)));
}

TEST(ProfileData, BadInputNamesFileAndLine) {
  const std::string dir = ::testing::TempDir() + "/mf_profile_bad";
  remove_all(dir);
  make_dirs(dir);
  auto write = [&](const std::string& name, const std::string& content) {
    write_file_atomic(dir + "/" + name, content);
    return dir + "/" + name;
  };
  std::string f = write("malformed.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"broken\n");
  EXPECT_EQ(error_of([&] { read_calibration_jsonl(f, "", false); }).rfind(f + ":2: invalid JSON", 0), 0u);
  f = write("notext.jsonl", "\n{\"body\": \"x\"}\n");
  EXPECT_EQ(error_of([&] { read_calibration_jsonl(f, "", false); }), f + ":2: missing key 'text' (or 'prompt' and 'response')");
  f = write("sft.jsonl", "{\"prompt\": \"q\"}\n");
  EXPECT_EQ(error_of([&] { read_calibration_jsonl(f, "", false); }), f + ":1: SFT line without key 'response'");
  f = write("field.jsonl", "{\"text\": \"a\", \"task\": \"x\"}\n{\"text\": \"b\"}\n");
  EXPECT_EQ(error_of([&] { read_calibration_jsonl(f, "task", true); }), f + ":2: no field 'task' (--domain-field)");
  f = write("empty.jsonl", "\n  \n");
  EXPECT_EQ(error_of([&] { read_calibration_jsonl(f, "", false); }),
            f + ": no documents (expected JSONL lines with a 'text' field)");
  auto docs = read_calibration_jsonl(write("ok.jsonl", "{\"text\": \"a\", \"domain\": 3}\n{\"prompt\": \"p\", \"response\": \"r\"}\n"),
                                     "", false);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_TRUE(docs[0].has_domain);
  EXPECT_EQ(docs[0].domain, "3");
  EXPECT_TRUE(docs[1].sft);
  EXPECT_EQ(docs[1].response, "r");
}

TEST(ProfileData, LengthBatchesRespectTokenBudget) {
  std::vector<Sample> s;
  for (int64_t len : {5, 9, 3, 9, 1, 4}) s.push_back(make_sample(std::vector<int64_t>(len, 1)));
  auto batches = make_length_batches(s, 18);
  // Sample 4 (one token) has nothing to score. Sorted: 9,9,5,4,3 -> {1,3} (2*9), {0,5,2} (3*5).
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0], (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(batches[1], (std::vector<int64_t>{0, 5, 2}));
  PaddedBatch pb = pad_batch(s, batches[1]);
  EXPECT_EQ(pb.ids.sizes(), (at::IntArrayRef{3, 5}));
  EXPECT_EQ(pb.tokens, 12);
  EXPECT_NEAR(pb.weights.sum().item<double>(), 3.0, 1e-6);  // Σ_s Σ_t 1/n_s = number of samples
}

TEST(ProfileLayers, PythonStyleRanges) {
  EXPECT_EQ(parse_profile_layers("", 4), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(parse_profile_layers("1:3", 4), (std::vector<int>{1, 2}));
  EXPECT_EQ(parse_profile_layers("2:", 4), (std::vector<int>{2, 3}));
  EXPECT_EQ(parse_profile_layers(":-1", 4), (std::vector<int>{0, 1, 2}));
  EXPECT_THROW(parse_profile_layers("3:1", 4), UsageError);
  EXPECT_THROW(parse_profile_layers("x", 4), UsageError);
}

// ---------------------------------------------------------------------------------------------
// End to end

namespace {

using mf::testing_helpers::CliRun;

CliRun run_cli(const std::string& args) { return mf::testing_helpers::run_moeforge("-q " + args); }

// A 2-layer Llama with the Llama-2 SentencePiece tokenizer (tests/data/tokenizers/llama2-spm).
const std::string& tiny_llama_dir() {
  static std::string dir = [] {
    std::string d = ::testing::TempDir() + "/mf_profile_llama";
    remove_all(d);
    testing_fixtures::save_tiny_spm_llama(d);
    return d;
  }();
  return dir;
}

std::string write_data(const std::string& name, const std::string& content) {
  const std::string p = ::testing::TempDir() + "/" + name;
  write_file_atomic(p, content);
  return p;
}

const char* kDocs[] = {"In the beginning God created the heaven and the earth.",
                       "The quick brown fox jumps over the lazy dog.",
                       "int main(void) { return 0; }",
                       "And the earth was without form, and void.",
                       "Pack my box with five dozen liquor jugs.",
                       "#include <stdio.h> static int x = 3;"};

}  // namespace

TEST(ProfileCli, WritesProfileThatReadProfileReadsBack) {
  const std::string& model = tiny_llama_dir();
  std::string data;
  for (int i = 0; i < 6; ++i)
    data += json({{"text", kDocs[i]}, {"domain", i % 3 == 2 ? "code" : "prose"}}).dump() + "\n";
  data += json({{"prompt", "Question: what is 2+2?"}, {"response", " four"}, {"domain", "prose"}}).dump() + "\n";
  const std::string file = write_data("mf_profile_data.jsonl", data);
  const std::string out = ::testing::TempDir() + "/mf_profile_out";
  remove_all(out);
  CliRun r = run_cli("profile " + model + " --data " + file + " --out " + out + " --coactivation --json");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["domains"], 2);
  EXPECT_EQ(j["domain_source"], "field:domain");
  EXPECT_EQ(j["domain_names"], (std::vector<std::string>{"code", "prose"}));
  EXPECT_EQ(j["domain_sizes"], (std::vector<int64_t>{2, 5}));

  ProfileData p = read_profile(out);
  EXPECT_EQ(p.num_domains, 2);
  EXPECT_EQ(p.intermediate_size, 24);
  ASSERT_EQ(p.layers.size(), 2u);
  ASSERT_TRUE(p.has_coactivation());
  EXPECT_EQ(p.layers[1].coactivation.sizes(), (at::IntArrayRef{24, 24}));
  EXPECT_TRUE(at::equal(p.layers[1].coactivation, p.layers[1].coactivation.t()));
  EXPECT_EQ(p.document_domains, (std::vector<int32_t>{1, 1, 0, 1, 1, 0, 1}));

  // Raw importance = Σ over each domain's documents of |Σ_W W·∂ℓ/∂W| from plain autograd.
  auto m = Model::load(model);
  auto tok = Tokenizer::load(model);
  for (auto& prm : m->parameters()) prm.set_requires_grad(true);
  at::Tensor want[2] = {at::zeros({24, 2}), at::zeros({24, 2})};
  for (int i = 0; i < 7; ++i) {
    Sample s;
    if (i < 6) {
      auto ids = tok->encode(kDocs[i], true);
      s = make_sample(std::vector<int64_t>(ids.begin(), ids.end()));
    } else {
      auto pr = tok->encode("Question: what is 2+2?", true), re = tok->encode(" four", false);
      std::vector<int64_t> ids(pr.begin(), pr.end());
      ids.insert(ids.end(), re.begin(), re.end());
      if (tok->eos_id() >= 0) ids.push_back(tok->eos_id());
      s = make_sample(ids, static_cast<int64_t>(pr.size()));
    }
    zero_grads(*m);
    calibration_loss(*m, pad_batch({s}, {0})).backward();
    for (int l = 0; l < 2; ++l) want[l].select(1, p.document_domains[i]) += weight_form(*m, l).abs().detach();
  }
  double sq[2] = {0, 0};
  for (int l = 0; l < 2; ++l) {
    EXPECT_TRUE(at::allclose(p.layers[l].importance_raw, want[l], 1e-4, 1e-7)) << p.layers[l].importance_raw << want[l];
    at::Tensor lg = at::log1p(want[l]);
    for (int d = 0; d < 2; ++d) sq[d] += (lg.select(1, d) * lg.select(1, d)).sum().item<double>();
  }
  for (int l = 0; l < 2; ++l)
    for (int d = 0; d < 2; ++d)
      EXPECT_TRUE(at::allclose(p.layers[l].importance.select(1, d), at::log1p(want[l].select(1, d)) / std::sqrt(sq[d]),
                               1e-4, 1e-6));
  EXPECT_GT(p.layers[0].act_abs_mean.sum().item<double>(), 0);
}

TEST(ProfileCli, KMeansDomainsAndLayerRange) {
  std::string data;
  for (int i = 0; i < 6; ++i) data += json({{"text", kDocs[i]}}).dump() + "\n";
  const std::string file = write_data("mf_profile_km.jsonl", data);
  const std::string out = ::testing::TempDir() + "/mf_profile_km";
  remove_all(out);
  CliRun r = run_cli("profile " + tiny_llama_dir() + " --data " + file + " --out " + out +
                     " --domains 3 --layers 1:2 --dtype bfloat16");
  ASSERT_EQ(r.code, 0) << r.err;
  ProfileData p = read_profile(out);
  EXPECT_EQ(p.num_domains, 3);
  EXPECT_EQ(p.info["domain_source"], "kmeans:model");
  ASSERT_EQ(p.layers.size(), 1u);
  EXPECT_EQ(p.layers[0].layer, 1);
  EXPECT_EQ(p.find(0), nullptr);
  EXPECT_FALSE(p.has_coactivation());
  EXPECT_EQ(p.document_domains.size(), 6u);
  int64_t total = 0;
  for (auto s : p.info["domain_sizes"]) total += s.get<int64_t>();
  EXPECT_EQ(total, 6);
}

TEST(ProfileCli, BadInputIsOneLineError) {
  const std::string out = ::testing::TempDir() + "/mf_profile_never";
  remove_all(out);
  const std::string f = write_data("mf_profile_bad.jsonl", "{\"text\": \"a b c\"}\n{\"text\": 5}\n");
  CliRun r = run_cli("profile " + tiny_llama_dir() + " --data " + f + " --out " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: " + f + ":2: key 'text' must be a string\n");
  const std::string g = write_data("mf_profile_nofield.jsonl", "{\"text\": \"a b c\"}\n{\"text\": \"d e\", \"lang\": \"x\"}\n");
  r = run_cli("profile " + tiny_llama_dir() + " --data " + g + " --out " + out + " --domain-field lang");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: " + g + ":1: no field 'lang' (--domain-field)\n");
  EXPECT_FALSE(path_exists(out));
}
