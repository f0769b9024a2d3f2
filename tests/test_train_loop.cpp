// The training loop: exact resume after a simulated kill, metrics JSONL, bf16 autocast, extra
// loss terms, the gradient hook, rank shards and rank-0-only writes, and the pretrain recipe end
// to end on a tiny model defined here (no dependency on src/model).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <map>
#include <memory>

#include "train/pretrain.h"
#include "train/trainer.h"
#include "util/compat.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/progress.h"
#include "util/rng.h"
#include "util/str.h"

using namespace mf;

namespace {

// A tiny language model: embedding -> MLP with dropout (so the RNG state matters) -> vocab.
struct TinyLmImpl : torch::nn::Module {
  TinyLmImpl(int64_t vocab, int64_t dim) {
    emb = register_module("emb", torch::nn::Embedding(vocab, dim));
    norm_w = register_parameter("norm_w", torch::ones({dim}));
    up = register_module("up", torch::nn::Linear(dim, 4 * dim));
    drop = register_module("drop", torch::nn::Dropout(0.1));
    out = register_module("out", torch::nn::Linear(4 * dim, vocab));
  }
  at::Tensor forward(const at::Tensor& ids) {
    at::Tensor h = emb(ids) * norm_w;
    return out(drop(torch::tanh(up(h))));
  }
  torch::nn::Embedding emb{nullptr};
  torch::nn::Linear up{nullptr}, out{nullptr};
  torch::nn::Dropout drop{nullptr};
  at::Tensor norm_w;
};
TORCH_MODULE(TinyLm);

std::string fresh_dir(const std::string& name) {
  // Per process: test binaries of several builds may run at the same time.
  std::string dir = ::testing::TempDir() + "/mf_train_loop_" + std::to_string(::getpid()) + "/" + name;
  remove_all(dir);
  make_dirs(dir);
  return dir;
}

// A token stream with structure to learn: token t+1 follows t mostly, noise otherwise.
std::vector<int32_t> synthetic_stream(int64_t n, int32_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> s(n);
  s[0] = 0;
  for (int64_t i = 1; i < n; ++i)
    s[i] = rng.uniform() < 0.8 ? (s[i - 1] + 1) % vocab : static_cast<int32_t>(rng.below(vocab));
  return s;
}

std::vector<json> read_metrics(const std::string& dir) {
  std::vector<json> out;
  std::string path = dir + "/metrics.jsonl";
  for (const auto& line : split(read_file(path), '\n'))
    if (!trim(line).empty()) out.push_back(parse_json(line, path));
  return out;
}

TrainerOptions small_options(const std::string& out_dir) {
  TrainerOptions o;
  o.batch_size = 4;
  o.grad_accum = 2;
  o.max_steps = 8;
  o.schedule.lr = 3e-2;
  o.schedule.min_lr = 3e-3;
  o.schedule.warmup_steps = 2;
  o.adamw.weight_decay = 0.1;
  o.clip = 0.5;
  o.eval_every = 4;
  o.eval_batches = 2;
  o.save_every = 4;
  o.keep_checkpoints = 1;
  o.seed = 11;
  o.out_dir = out_dir;
  o.progress = false;
  return o;
}

struct LoopData {
  PackedSequences train{synthetic_stream(301, 12, 1), 8};  // 37 windows: 9 batches an epoch
  std::vector<std::pair<std::string, PackedSequences>> val;
  LoopData() {
    val.emplace_back("a", PackedSequences(synthetic_stream(100, 12, 2), 8));
    val.emplace_back("b", PackedSequences(synthetic_stream(60, 12, 3), 8));
  }
};

}  // namespace

TEST(TrainLoop, KilledAndResumedRunMatchesUninterruptedExactly) {
  Progress::set_enabled(false);
  LoopData data;
  auto loss_for = [](TinyLm m) {
    return [m](const at::Tensor& w) mutable {
      return next_token_loss(m->forward(w.slice(1, 0, w.size(1) - 1)), w);
    };
  };

  // Uninterrupted: 8 steps (16 micro-batches of 4 cross an epoch boundary of 9 batches).
  const std::string dir_a = fresh_dir("uninterrupted");
  torch::manual_seed(1);
  TinyLm a(12, 8);
  TrainResult ra = train_loop(*a, loss_for(a), data.train, data.val, small_options(dir_a));
  EXPECT_EQ(ra.steps, 8);

  // Killed after step 6 (last checkpoint: step 4), then resumed by fresh objects: a model
  // initialised differently and a disturbed global RNG, as in a new process.
  const std::string dir_b = fresh_dir("resumed");
  torch::manual_seed(1);
  {
    TinyLm b(12, 8);
    TrainerOptions o = small_options(dir_b);
    o.stop_after_step = 6;
    TrainResult rb = train_loop(*b, loss_for(b), data.train, data.val, o);
    EXPECT_EQ(rb.steps, 6);
  }
  EXPECT_EQ(read_metrics(dir_b).size(), 6u);
  {
    std::ofstream torn(dir_b + "/metrics.jsonl", std::ios::app);
    torn << "{\"step\": 7, \"loss\": 2.";  // killed in the middle of writing a line
  }
  EXPECT_EQ(base_name(latest_checkpoint(dir_b)), "step-00000004");
  torch::manual_seed(999);
  TinyLm c(12, 8);
  torch::randn({100});
  TrainResult rc = train_loop(*c, loss_for(c), data.train, data.val, small_options(dir_b));
  EXPECT_EQ(rc.start_step, 4);
  EXPECT_EQ(rc.steps, 8);

  auto ma = read_metrics(dir_a), mb = read_metrics(dir_b);
  ASSERT_EQ(ma.size(), 8u);
  ASSERT_EQ(mb.size(), 8u);  // steps 5 and 6 of the killed run were replaced, not duplicated
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(ma[i]["step"], mb[i]["step"]);
    EXPECT_EQ(ma[i]["loss"].get<double>(), mb[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(ma[i]["grad_norm"].get<double>(), mb[i]["grad_norm"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(ma[i]["lr"].get<double>(), mb[i]["lr"].get<double>());
    EXPECT_EQ(ma[i].contains("val_loss"), mb[i].contains("val_loss"));
    if (ma[i].contains("val_loss")) EXPECT_EQ(ma[i]["val_loss"], mb[i]["val_loss"]);
  }
  auto pa = module_tensors(*a), pc = module_tensors(*c);
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i].second, pc[i].second)) << pa[i].first;

  // The loss actually moved (the comparison above is not between two constant curves).
  EXPECT_LT(ma.back()["loss"].get<double>(), ma.front()["loss"].get<double>());
  // keep_checkpoints = 1: only the final one is left.
  EXPECT_EQ(list_dir(dir_b + "/checkpoints").size(), 1u);
  // Starting over (no resume) in a directory with checkpoints is refused.
  TrainerOptions over = small_options(dir_b);
  over.resume = false;
  EXPECT_THROW(train_loop(*c, loss_for(c), data.train, data.val, over), Error);
}

TEST(TrainLoop, MetricsLinesParse) {
  Progress::set_enabled(false);
  LoopData data;
  const std::string dir = fresh_dir("metrics");
  torch::manual_seed(2);
  TinyLm m(12, 8);
  auto loss = [m](const at::Tensor& w) mutable { return next_token_loss(m->forward(w.slice(1, 0, w.size(1) - 1)), w); };
  TrainerOptions o = small_options(dir);
  train_loop(*m, loss, data.train, data.val, o);
  auto lines = read_metrics(dir);
  ASSERT_EQ(lines.size(), 8u);
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& j = lines[i];
    EXPECT_EQ(j["step"].get<int64_t>(), static_cast<int64_t>(i + 1));
    EXPECT_GT(j["loss"].get<double>(), 0.0);
    EXPECT_GE(j["grad_norm"].get<double>(), 0.0);
    EXPECT_EQ(j["tokens"].get<int64_t>(), static_cast<int64_t>(i + 1) * 4 * 2 * 8);
    EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
    bool eval_step = (i + 1) % 4 == 0;
    ASSERT_EQ(j.contains("val_loss"), eval_step);
    if (eval_step) {
      EXPECT_GT(j["val_loss"]["a"].get<double>(), 0.0);
      EXPECT_GT(j["val_loss"]["b"].get<double>(), 0.0);
    }
  }
  // lr 3e-2, min 3e-3, warmup 2, 8 steps: 0, 1.5e-2, 3e-2, then cosine; index 5 is halfway
  // through the decay: 3e-3 + 2.7e-2 / 2.
  EXPECT_DOUBLE_EQ(lines[0]["lr"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(lines[1]["lr"].get<double>(), 1.5e-2);
  EXPECT_DOUBLE_EQ(lines[2]["lr"].get<double>(), 3e-2);
  EXPECT_NEAR(lines[5]["lr"].get<double>(), 1.65e-2, 1e-15);
  // A checkpoint written with another batch size is refused.
  TrainerOptions other = small_options(dir);
  other.batch_size = 2;
  other.max_steps = 10;
  try {
    train_loop(*m, loss, data.train, data.val, other);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("trainer_state.json: checkpoint was written with batch_size 4"),
              std::string::npos)
        << e.what();
  }
}

TEST(TrainLoop, Bf16AutocastOnCpu) {
  torch::manual_seed(4);
  torch::nn::Linear lin(8, 8);
  at::Tensor x = torch::randn({2, 8});
  {
    CpuAutocast on(true, at::kBFloat16);
    EXPECT_EQ(lin(x).scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(lin(x).scalar_type(), at::kFloat);  // state restored
  {
    CpuAutocast off(false, at::kBFloat16);
    EXPECT_EQ(lin(x).scalar_type(), at::kFloat);
  }

  Progress::set_enabled(false);
  LoopData data;
  const std::string dir = fresh_dir("bf16");
  torch::manual_seed(2);
  TinyLm m(12, 8);
  auto loss = [m](const at::Tensor& w) mutable { return next_token_loss(m->forward(w.slice(1, 0, w.size(1) - 1)), w); };
  TrainerOptions o = small_options(dir);
  o.bf16 = true;
  o.max_steps = 20;
  o.eval_every = 0;
  train_loop(*m, loss, data.train, data.val, o);
  auto lines = read_metrics(dir);
  ASSERT_EQ(lines.size(), 20u);
  EXPECT_LT(lines.back()["loss"].get<double>(), lines.front()["loss"].get<double>() - 0.3);
  EXPECT_EQ(m->up->weight.scalar_type(), at::kFloat);  // master weights stay fp32
}

namespace {

BatchLossFn lm_loss(TinyLm m) {
  return [m](const at::Tensor& w) mutable { return next_token_loss(m->forward(w.slice(1, 0, w.size(1) - 1)), w); };
}

// Gradients by parameter name, as the gradient hook sees them.
std::map<std::string, at::Tensor> grads_of(TinyLm m) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : m->named_parameters())
    if (p.value().grad().defined()) out[p.key()] = p.value().grad().clone();
  return out;
}

}  // namespace

TEST(TrainLoop, LossTermIsAddedToTheLossLoggedAndDifferentiated) {
  Progress::set_enabled(false);
  LoopData data;
  const double c = 0.25;
  int64_t term_calls = 0;
  // Two runs from the same initialisation; the second adds c * sum(norm_w), whose gradient
  // is c for every element of norm_w and 0 elsewhere.
  auto run = [&](const std::string& name, bool with_term) {
    torch::manual_seed(3);
    TinyLm m(12, 8);
    TrainerOptions o = small_options(fresh_dir(name));
    o.max_steps = 2;
    o.eval_every = 1;  // validation at every step: the term must not be evaluated there
    std::map<std::string, at::Tensor> first;
    o.on_gradients = [&](const std::vector<at::Tensor>& params) {
      bool has_norm_w = false;
      for (const auto& p : params) has_norm_w |= p.is_same(m->norm_w);
      EXPECT_TRUE(has_norm_w);
      if (first.empty()) first = grads_of(m);
    };
    if (with_term)
      o.loss_terms.push_back({"norm_sum", [m, c, &term_calls]() {
                                ++term_calls;
                                return m->norm_w.sum() * c;
                              }});
    train_loop(*m, lm_loss(m), data.train, data.val, o);
    return std::make_pair(first, read_metrics(o.out_dir));
  };
  auto [g0, lines0] = run("term_off", false);
  auto [g1, lines1] = run("term_on", true);
  EXPECT_EQ(term_calls, 2 * 2);  // steps x micro-batches; none during the two validations
  ASSERT_EQ(lines1.size(), 2u);
  EXPECT_FALSE(lines0[0].contains("norm_sum"));
  // Step 1: norm_w is still ones(8) in both micro-batches, so the term is 8c; loss is the total.
  EXPECT_DOUBLE_EQ(lines1[0]["norm_sum"].get<double>(), 8 * c);
  EXPECT_NEAR(lines1[0]["loss"].get<double>(), lines0[0]["loss"].get<double>() + 8 * c, 1e-5);
  EXPECT_TRUE(lines1[1].contains("norm_sum"));
  ASSERT_EQ(g0.size(), g1.size());
  for (const auto& [name, g] : g0) {
    if (name == "norm_w") {
      EXPECT_TRUE(torch::allclose(g1[name] - g, torch::full_like(g, c), 0.0, 1e-5)) << g1[name] - g;
    } else {
      EXPECT_TRUE(torch::equal(g1[name], g)) << name;
    }
  }

  // A term may not take a key of the metrics line, nor another term's name.
  TinyLm m(12, 8);
  TrainerOptions bad = small_options(fresh_dir("term_bad"));
  bad.loss_terms.push_back({"loss", [m]() { return m->norm_w.sum(); }});
  EXPECT_THROW(train_loop(*m, lm_loss(m), data.train, data.val, bad), Error);
  bad.loss_terms = {{"x", [m]() { return m->norm_w.sum(); }}, {"x", [m]() { return m->norm_w.sum(); }}};
  EXPECT_THROW(train_loop(*m, lm_loss(m), data.train, data.val, bad), Error);
}

TEST(TrainLoop, GradientHookRunsOncePerStepBeforeClipping) {
  Progress::set_enabled(false);
  LoopData data;
  torch::manual_seed(5);
  TinyLm m(12, 8);
  TrainerOptions o = small_options(fresh_dir("hook"));
  o.clip = 1e-3;  // far below the gradient norm, so clipping changes every step's gradients
  std::vector<double> seen;
  o.on_gradients = [&](const std::vector<at::Tensor>& params) {
    double sq = 0.0;  // as clip_grad_norm sums
    for (const auto& p : params) {
      if (!p.grad().defined()) continue;
      const double n = p.grad().to(at::kFloat).norm().item<double>();
      sq += n * n;
    }
    seen.push_back(std::sqrt(sq));
  };
  train_loop(*m, lm_loss(m), data.train, data.val, o);
  auto lines = read_metrics(o.out_dir);
  ASSERT_EQ(seen.size(), static_cast<size_t>(o.max_steps));
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i], lines[i]["grad_norm"].get<double>()) << "step " << i + 1;  // the unclipped norm
    EXPECT_GT(seen[i], 10 * o.clip);
  }

  // What the hook leaves in the gradients is what clipping and the optimizer use (as an
  // all-reduce's average would be): halving them halves the logged norm.
  auto first_norm = [&](const std::string& name, double scale) {
    torch::manual_seed(5);
    TinyLm a(12, 8);
    TrainerOptions h = small_options(fresh_dir(name));
    h.max_steps = 1;
    h.clip = 0.0;
    h.on_gradients = [scale](const std::vector<at::Tensor>& params) {
      for (const auto& p : params)
        if (p.grad().defined()) p.mutable_grad().mul_(scale);
    };
    train_loop(*a, lm_loss(a), data.train, data.val, h);
    return read_metrics(h.out_dir)[0]["grad_norm"].get<double>();
  };
  const double full = first_norm("hook_full", 1.0), half = first_norm("hook_half", 0.5);
  EXPECT_NEAR(half, 0.5 * full, 1e-6 * full);
}

TEST(TrainLoop, RanksTakeContiguousShardsOfTheGlobalBatchAndOnlyRankZeroWrites) {
  Progress::set_enabled(false);
  LoopData data;
  const std::string dir = fresh_dir("shards");
  struct Run {
    std::vector<at::Tensor> batches;  // training micro-batches, in order
    TrainResult result;
  };
  auto run = [&](int64_t rank, int64_t world, int64_t batch, const std::string& out, int64_t steps) {
    torch::manual_seed(6);
    TinyLm m(12, 8);
    auto seen = std::make_shared<std::vector<at::Tensor>>();
    BatchLossFn loss = [m, seen](const at::Tensor& w) mutable {
      if (m->is_training()) seen->push_back(w.clone());
      return next_token_loss(m->forward(w.slice(1, 0, w.size(1) - 1)), w);
    };
    TrainerOptions o = small_options(out);
    o.batch_size = batch;
    o.rank = rank;
    o.world_size = world;
    o.max_steps = steps;
    Run r;
    r.result = train_loop(*m, loss, data.train, data.val, o);
    r.batches = *seen;
    return r;
  };
  // 37 windows: 4 global batches of 8 an epoch, so 3 steps x 2 micro-batches cross an epoch.
  Run single = run(0, 1, 8, dir + "/single", 3);
  Run r0 = run(0, 2, 4, dir + "/rank0", 3);
  Run r1 = run(1, 2, 4, dir + "/rank1", 3);
  ASSERT_EQ(single.batches.size(), 6u);
  ASSERT_EQ(r0.batches.size(), 6u);
  ASSERT_EQ(r1.batches.size(), 6u);
  for (size_t k = 0; k < 6; ++k) {
    EXPECT_EQ(r0.batches[k].size(0), 4);
    EXPECT_TRUE(torch::equal(torch::cat({r0.batches[k], r1.batches[k]}, 0), single.batches[k])) << "micro-batch " << k;
  }

  // The writer logs the run's tokens (all ranks) and records world_size; rank 1 wrote nothing.
  auto ms = read_metrics(dir + "/single"), m0 = read_metrics(dir + "/rank0");
  ASSERT_EQ(m0.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(m0[i]["tokens"], ms[i]["tokens"]);
  const std::string ckpt = latest_checkpoint(dir + "/rank0");
  ASSERT_FALSE(ckpt.empty());
  EXPECT_EQ(read_json_file(ckpt + "/trainer_state.json")["world_size"], 2);
  EXPECT_EQ(r1.result.steps, 3);
  EXPECT_FALSE(path_exists(dir + "/rank1"));

  // A non-writer resumes from the writer's checkpoint, continues its shard of the global
  // order, and still writes nothing.
  const std::string metrics_before = read_file(dir + "/rank0/metrics.jsonl");
  const auto ckpts_before = list_dir(dir + "/rank0/checkpoints");
  Run resumed = run(1, 2, 4, dir + "/rank0", 4);
  EXPECT_EQ(resumed.result.start_step, 3);
  EXPECT_EQ(resumed.result.steps, 4);
  Run single4 = run(0, 1, 8, dir + "/single4", 4);
  ASSERT_EQ(resumed.batches.size(), 2u);
  ASSERT_EQ(single4.batches.size(), 8u);
  for (size_t k = 0; k < 2; ++k)
    EXPECT_TRUE(torch::equal(resumed.batches[k], single4.batches[6 + k].slice(0, 4, 8))) << "micro-batch " << k;
  EXPECT_EQ(read_file(dir + "/rank0/metrics.jsonl"), metrics_before);
  EXPECT_EQ(list_dir(dir + "/rank0/checkpoints"), ckpts_before);

  // Resuming with another world_size is refused, naming the checkpoint.
  try {
    run(0, 1, 8, dir + "/rank0", 4);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(ckpt + "/trainer_state.json: checkpoint written with world_size 2, this run has 1; "),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(run(2, 2, 4, dir + "/bad_rank", 1), Error);
}

namespace {

// Byte-level tokenizer for the recipe test: BOS 256 then the bytes; EOS 257.
std::vector<int32_t> bytes_with_bos(const std::string& s) {
  std::vector<int32_t> ids = {256};
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

std::string write_config(const std::string& dir, const json& training_overrides) {
  json cfg = {{"model",
               {{"hidden_size", 16},
                {"intermediate_size", 64},
                {"num_hidden_layers", 1},
                {"num_attention_heads", 2},
                {"vocab_size", 258}}},
              {"training",
               {{"seq_len", 32},
                {"batch_size", 4},
                {"max_steps", 6},
                {"lr", 1e-2},
                {"warmup_steps", 1},
                {"eval_every", 3},
                {"save_every", 3},
                {"bf16", false},
                {"train_data", std::string(MOEFORGE_TEST_DATA) + "/train/tiny_train.jsonl"},
                {"validation_data", {std::string(MOEFORGE_TEST_DATA) + "/train/tiny_validation.jsonl"}},
                {"tokenizer", "tok"},
                {"output_dir", "run"}}}};
  for (auto it = training_overrides.begin(); it != training_overrides.end(); ++it) {
    if (it.value().is_null()) cfg["training"].erase(it.key());
    else cfg["training"][it.key()] = it.value();
  }
  std::string path = dir + "/pretrain.json";
  write_json_file(path, cfg);
  return path;
}

std::string config_error(const std::string& path) {
  try {
    load_pretrain_config(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(TrainLoop, PretrainConfigDefaultsAndErrors) {
  const std::string dir = fresh_dir("config");
  PretrainConfig c = load_pretrain_config(write_config(dir, json::object()));
  EXPECT_EQ(c.model["num_key_value_heads"], 2);
  EXPECT_EQ(c.model["model_type"], "llama");
  EXPECT_EQ(c.model["max_position_embeddings"], 32);
  EXPECT_EQ(c.trainer.out_dir, dir + "/run");  // relative to the config file
  EXPECT_EQ(c.tokenizer, dir + "/tok");
  EXPECT_EQ(c.trainer.grad_accum, 1);
  EXPECT_DOUBLE_EQ(c.trainer.schedule.min_lr, 1e-3);
  EXPECT_EQ(c.validation_files.size(), 1u);

  std::string p = write_config(dir, {{"batch_size", 0}});
  EXPECT_EQ(config_error(p), p + ": training.batch_size must be positive");
  p = write_config(dir, {{"lr", nullptr}});
  EXPECT_EQ(config_error(p), p + ": missing key 'lr'");
  p = write_config(dir, {{"betas", {0.9}}});
  EXPECT_EQ(config_error(p), p + ": training.betas must be a list of two numbers");
  p = write_config(dir, {{"learning_rate", 1}});
  EXPECT_EQ(config_error(p), p + ": unknown key 'training.learning_rate'");
  p = write_config(dir, {{"warmup_steps", 7}});
  EXPECT_EQ(config_error(p), p + ": training.warmup_steps exceeds max_steps");
  p = write_config(dir, {{"min_lr", 1.0}});
  EXPECT_EQ(config_error(p), p + ": training.min_lr must lie in [0, lr]");
  write_file_atomic(dir + "/broken.json", "{\"model\": ");
  EXPECT_EQ(config_error(dir + "/broken.json").rfind(dir + "/broken.json: invalid JSON", 0), 0u);
}

TEST(TrainLoop, PretrainRecipeEndToEnd) {
  Progress::set_enabled(false);
  const std::string dir = fresh_dir("recipe");
  PretrainConfig cfg = load_pretrain_config(write_config(dir, json::object()));
  auto make_model = [&]() {
    TinyLm m(json_get<int64_t>(cfg.model, "vocab_size", "cfg"), 16);
    PretrainModel pm;
    pm.module = m.ptr();
    pm.logits = [m](const at::Tensor& ids) mutable { return m->forward(ids); };
    return pm;
  };
  PretrainTokenizer tok{tokenize_each(bytes_with_bos), 257, ""};
  TrainResult r = run_pretrain(cfg, make_model, tok);
  EXPECT_EQ(r.steps, 6);
  // Per-domain validation: the fixture's three domains.
  EXPECT_EQ(r.val_loss.size(), 3u);
  EXPECT_TRUE(r.val_loss.count("scripture"));
  const std::string final_dir = dir + "/run/final";
  json config = read_json_file(final_dir + "/config.json");
  EXPECT_EQ(config["hidden_size"], 16);
  EXPECT_EQ(config["eos_token_id"], 257);
  EXPECT_TRUE(path_exists(final_dir + "/model.safetensors"));
  json record = read_json_file(final_dir + "/train_record.json");
  EXPECT_EQ(record["steps"], 6);
  EXPECT_EQ(record["inputs"].size(), 2u);
  EXPECT_EQ(read_metrics(dir + "/run").size(), 6u);
  // Same seed, same model: a second run from scratch reproduces the curve.
  PretrainConfig again = cfg;
  again.trainer.out_dir = dir + "/run2";
  run_pretrain(again, make_model, tok);
  auto m1 = read_metrics(dir + "/run"), m2 = read_metrics(dir + "/run2");
  for (size_t i = 0; i < m1.size(); ++i) EXPECT_EQ(m1[i]["loss"], m2[i]["loss"]);
  // Token ids beyond the model's vocabulary are refused.
  PretrainConfig small = cfg;
  small.model["vocab_size"] = 200;
  small.trainer.out_dir = dir + "/run3";
  EXPECT_THROW(run_pretrain(small, make_model, {tokenize_each(bytes_with_bos), 199, ""}), Error);
}
