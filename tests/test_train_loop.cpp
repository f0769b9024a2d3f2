// The training loop: exact resume after a simulated kill, metrics JSONL, bf16 autocast, and
// the pretrain recipe end to end on a tiny model defined here (no dependency on src/model).
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>

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
