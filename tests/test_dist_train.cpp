// Data-parallel training through the real launchers (issue 19): Debian's torchrun
// (`--no_python --redirects 1 --tee 1`, see docs/distributed.md) and `moeforge launch`, Gloo over
// loopback. W ranks x batch b must equal one rank x batch W*b in fp32 (bf16 autocast off: bf16
// GEMMs round differently for other batch shapes): the same loss curve, gradient norms and
// validation losses within 1e-5 relative and final weights within 1e-5 (the all-reduce changes the
// summation order only). A 2-rank run killed after a checkpoint and restarted equals an
// uninterrupted one bit for bit; resuming with another world size is a one-line error.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "dist/dist.h"
#include "io/checkpoint.h"
#include "test_helpers.h"
#include "util/fs.h"
#include "util/json.h"

using namespace mf;
using mf::testing_helpers::run_moeforge;

namespace {

const std::string& data_dir() {
  static std::string d = [] {
    std::string dir = ::testing::TempDir() + "/mf_dist_train";
    remove_all(dir);
    make_dirs(dir);
    std::string train, val;
    for (int i = 0; i < 300; ++i)
      train += json({{"text", "Document " + std::to_string(i) + ": the router sends tokens to experts, which answer " +
                                  std::to_string(i * 7 % 13) + "."}}).dump() + "\n";
    for (int i = 0; i < 40; ++i)
      val += json({{"text", "Validation " + std::to_string(i) + " about experts and routers."},
                   {"domain", i % 2 ? "odd" : "even"}}).dump() + "\n";
    write_file_atomic(dir + "/train.jsonl", train);
    write_file_atomic(dir + "/val.jsonl", val);
    return dir;
  }();
  return d;
}

// A small dense Llama pretrained from scratch (same seed: same initial weights on every rank), or
// a Mixtral of 5 experts, top-2, without the balance loss (which each rank computes on its own
// tokens, as DeepSpeed and Megatron do: it is not a function of the global batch).
std::string config_with_batch(int64_t batch, int64_t save_every = 0, bool moe = false) {
  const std::string path = data_dir() + "/cfg" + std::to_string(batch) + "_" + std::to_string(save_every) +
                           (moe ? "_moe" : "") + ".json";
  json cfg = {{"model",
               {{"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                {"num_key_value_heads", 2}, {"vocab_size", 8192}, {"tie_word_embeddings", true}}},
              {"training",
               {{"seq_len", 32}, {"batch_size", batch}, {"lr", 1e-3}, {"warmup_steps", 2}, {"max_steps", 6},
                {"seed", 5}, {"bf16", false}, {"eval_every", 3}, {"eval_batches", 2}, {"save_every", save_every},
                {"train_data", data_dir() + "/train.jsonl"}, {"validation_data", data_dir() + "/val.jsonl"},
                {"tokenizer", std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny"}}}};
  if (moe)
    cfg["model"].update({{"model_type", "mixtral"}, {"num_local_experts", 5}, {"num_experts_per_tok", 2},
                         {"router_aux_loss_coef", 0.0}});
  write_file_atomic(path, cfg.dump());
  return path;
}

std::string train_args(const std::string& config, const std::string& out) {
  return "-q train --recipe pretrain --config " + config + " --output " + out;
}

std::string torchrun(int nproc) {
  return "torchrun --no_python --redirects 1 --tee 1 --nproc_per_node " + std::to_string(nproc) +
         " --master_port " + std::to_string(dist::free_port()) + " " + MOEFORGE_BIN + " ";
}

// The shell command line running `moeforge ARGS` under a launcher (the binary path included).
int run_shell(const std::string& cmd, std::string* out = nullptr) {
  const std::string log = ::testing::TempDir() + "/mf_dist_train_cmd.log";
  const int status = std::system((cmd + " > " + log + " 2>&1").c_str());
  if (out) *out = read_file(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<json> metrics(const std::string& run) {
  std::vector<json> v;
  std::istringstream in(read_file(run + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) v.push_back(json::parse(line));
  return v;
}

double max_weight_diff(const std::string& a, const std::string& b) {
  Checkpoint ca = Checkpoint::open(a), cb = Checkpoint::open(b);
  EXPECT_EQ(ca.names(), cb.names());
  double d = 0;
  for (const auto& n : ca.names()) d = std::max(d, (ca.get(n) - cb.get(n)).abs().max().item<double>());
  return d;
}

// `weights`: the file whose tensors must agree (the router recipe's final/ keeps the model's bf16,
// whose rounding can flip on a 1e-7 difference: its fp32 trainer checkpoint is compared instead).
void expect_same_run(const std::string& one, const std::string& many, const std::string& weights = "final") {
  const auto m1 = metrics(one), m2 = metrics(many);
  ASSERT_EQ(m1.size(), m2.size());
  for (size_t i = 0; i < m1.size(); ++i) {
    EXPECT_NEAR(m1[i]["loss"].get<double>(), m2[i]["loss"].get<double>(), 1e-5 * m1[i]["loss"].get<double>()) << i;
    EXPECT_EQ(m1[i]["tokens"], m2[i]["tokens"]);
    // The all-reduced gradient: its norm must be the one-rank batch's (a sum instead of a mean, or
    // a missing reduction, shows here even where Adam's normalised steps hide it).
    EXPECT_NEAR(m1[i]["grad_norm"].get<double>(), m2[i]["grad_norm"].get<double>(), 1e-5 * m1[i]["grad_norm"].get<double>());
    if (m1[i].contains("val_loss"))
      for (const auto& [d, v] : m1[i]["val_loss"].items())
        EXPECT_NEAR(v.get<double>(), m2[i]["val_loss"][d].get<double>(), 1e-5 * v.get<double>()) << d;
  }
  EXPECT_LE(max_weight_diff(one + "/" + weights, many + "/" + weights), 1e-5);
}

bool have_torchrun() { return std::system("command -v torchrun > /dev/null 2>&1") == 0; }

}  // namespace

TEST(DistTrain, TwoRanksUnderTorchrunEqualOneRankWithTheDoubleBatch) {
  ASSERT_TRUE(have_torchrun()) << "torchrun missing: install python3-torch (scripts/install-deps.sh)";
  const std::string one = data_dir() + "/one4", two = data_dir() + "/two2";
  remove_all(one);
  remove_all(two);
  ASSERT_EQ(run_moeforge(train_args(config_with_batch(4), one), true).code, 0);
  std::string log;
  ASSERT_EQ(run_shell(torchrun(2) + train_args(config_with_batch(2), two), &log), 0) << log;
  expect_same_run(one, two);
  // Rank 0 alone wrote the run: one metrics line per step, no stray files of rank 1.
  EXPECT_EQ(metrics(two).size(), 6u);
}

TEST(DistTrain, ThreeRanksUnderMoeforgeLaunchEqualOneRankWithTheTripleBatch) {
  const std::string one = data_dir() + "/one6", three = data_dir() + "/three2";
  remove_all(one);
  remove_all(three);
  ASSERT_EQ(run_moeforge(train_args(config_with_batch(6), one), true).code, 0);
  std::string log;
  ASSERT_EQ(run_shell(std::string(MOEFORGE_BIN) + " launch --nproc 3 --master-port 0 -- " + MOEFORGE_BIN + " " +
                          train_args(config_with_batch(2), three),
                      &log),
            0)
      << log;
  expect_same_run(one, three);
}

namespace {

// Runs `args` (a train command for run directory `full`) under 2 ranks of moeforge launch to the
// end, then again into `killed`, SIGKILLs the launcher (its ranks die with it) once the step-2
// checkpoint exists, and resumes: the final weights must equal the uninterrupted run's bit for bit.
void expect_killed_run_resumes(const std::string& cfg, const std::string& extra, const std::string& full,
                               const std::string& killed) {
  remove_all(full);
  remove_all(killed);
  const std::string launch = std::string(MOEFORGE_BIN) + " launch --nproc 2 --master-port 0 -- " + MOEFORGE_BIN + " ";
  ASSERT_EQ(run_shell(launch + train_args(cfg, full) + extra), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", (launch + train_args(cfg, killed) + extra + " > /dev/null 2>&1").c_str(), nullptr);
    _exit(127);
  }
  bool saw_checkpoint = false;
  for (int i = 0; i < 600 && !saw_checkpoint; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    saw_checkpoint = path_exists(killed + "/checkpoints/step-00000002/trainer_state.json");
  }
  kill(-pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  ASSERT_TRUE(saw_checkpoint);

  // Resuming with one rank: refused, naming the checkpoint's world size.
  auto r = run_moeforge(train_args(cfg, killed) + extra, true);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("checkpoint written with world_size 2, this run has 1"), std::string::npos) << r.out;
  // With two ranks: the uninterrupted run's weights, bit for bit.
  std::string log;
  ASSERT_EQ(run_shell(launch + train_args(cfg, killed) + extra, &log), 0) << log;
  EXPECT_EQ(max_weight_diff(full + "/final", killed + "/final"), 0.0);
}

}  // namespace

TEST(DistTrain, AKilledTwoRankRunResumesBitForBitAndRefusesAnotherWorldSize) {
  expect_killed_run_resumes(config_with_batch(2, 2), "", data_dir() + "/full", data_dir() + "/killed");
}

// The router recipe (routers + attention LoRA of models/tiny-mixtral, experts frozen) on SFT data
// whose answers differ in length (so the ranks hold different numbers of target tokens): 2 ranks x
// batch 2 under torchrun equal 1 rank x batch 4. Without a balance loss (computed per
// rank, docs/distributed.md), without LoRA dropout and router jitter (their random draws depend on
// the rank's batch): the model is models/tiny-mixtral with router_jitter_noise 0. AdamW eps 1e-6:
// the router rows of experts a token did not select get a gradient that is zero analytically but
// ~1e-10 of rounding noise (top-k renormalisation through the full softmax, as HF computes it),
// and with eps 1e-8 Adam's first steps turn that noise into updates of ~1e-2 lr whose sign
// depends on the summation order: a property of Adam on zero gradients, not of the all-reduce.
TEST(DistTrain, RouterRecipeTwoRanksEqualOneRankWithTheDoubleBatch) {
  ASSERT_TRUE(have_torchrun()) << "torchrun missing: install python3-torch (scripts/install-deps.sh)";
  std::string sft;
  for (int i = 0; i < 64; ++i)
    sft += json({{"prompt", "Question " + std::to_string(i) + ": what does the router choose?"},
                 {"response", " expert " + std::to_string(i % 8) + std::string(static_cast<size_t>(i % 5) * 6, '!')}})
               .dump() +
           "\n";
  write_file_atomic(data_dir() + "/sft.jsonl", sft);
  auto config = [&](int64_t batch) {
    const std::string path = data_dir() + "/router" + std::to_string(batch) + ".json";
    json cfg = {{"training",
                 {{"seq_len", 32}, {"batch_size", batch}, {"max_steps", 4}, {"lr", 1e-3}, {"bf16", false},
                  {"warmup_steps", 1}, {"eval_every", 2}, {"eval_batches", 2}, {"save_every", 0}, {"seed", 3},
                  {"eps", 1e-6},
                  {"train_data", data_dir() + "/sft.jsonl"}, {"validation_data", data_dir() + "/sft.jsonl"}}},
                {"router", {{"balance_loss", "none"}}},
                {"lora", {{"enabled", true}, {"r", 4}, {"dropout", 0.0}}}};
    write_file_atomic(path, cfg.dump());
    return path;
  };
  const std::string source = std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny-mixtral";
  const std::string model = data_dir() + "/tiny-mixtral-no-jitter";
  remove_all(model);
  make_dirs(model);
  for (const char* f : {"model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    ASSERT_EQ(::symlink((source + "/" + f).c_str(), (model + "/" + f).c_str()), 0) << f;
  json mc = read_json_file(source + "/config.json");
  mc["router_jitter_noise"] = 0.0;
  write_file_atomic(model + "/config.json", mc.dump());
  const std::string one = data_dir() + "/router_one4", two = data_dir() + "/router_two2";
  remove_all(one);
  remove_all(two);
  auto r = run_moeforge("-q train " + model + " --recipe router --config " + config(4) + " --output " + one, true);
  ASSERT_EQ(r.code, 0) << r.out;
  std::string log;
  ASSERT_EQ(run_shell(torchrun(2) + "-q train " + model + " --recipe router --config " + config(2) + " --output " + two, &log),
            0)
      << log;
  expect_same_run(one, two, "checkpoints/step-00000004/model.safetensors");
  // The same with the (frozen) experts spread over the ranks: checkpoints and final/ gather them.
  const std::string ep = data_dir() + "/router_ep2";
  remove_all(ep);
  ASSERT_EQ(run_shell(torchrun(2) + "-q train " + model + " --recipe router --config " + config(2) + " --output " + ep +
                          " --expert-parallel",
                      &log),
            0)
      << log;
  expect_same_run(one, ep, "checkpoints/step-00000004/model.safetensors");
  // final/: every tensor of the input, the frozen experts bit for bit (gathered from their owners).
  Checkpoint in = Checkpoint::open(source), out = Checkpoint::open(ep + "/final");
  EXPECT_EQ(in.names(), out.names());
  int64_t experts = 0;
  for (const auto& n : in.names())
    if (n.find(".experts.") != std::string::npos) {
      EXPECT_TRUE(at::equal(in.get(n), out.get(n))) << n;
      ++experts;
    }
  EXPECT_EQ(experts, 6 * 8 * 3);
}

// Expert parallelism: each rank computes its shard of every layer's experts (5 experts: 3 + 2 on
// two ranks, 2 + 2 + 1 on three) for all ranks' tokens; the run must still equal one process with
// the whole batch, and its checkpoints (experts gathered to rank 0) must resume bit for bit.
TEST(DistTrain, ExpertParallelRanksEqualOneRankWithTheWholeBatch) {
  ASSERT_TRUE(have_torchrun()) << "torchrun missing: install python3-torch (scripts/install-deps.sh)";
  const std::string one = data_dir() + "/ep_one4", two = data_dir() + "/ep_two2";
  remove_all(one);
  remove_all(two);
  ASSERT_EQ(run_moeforge(train_args(config_with_batch(4, 0, true), one), true).code, 0);
  std::string log;
  ASSERT_EQ(run_shell(torchrun(2) + train_args(config_with_batch(2, 0, true), two) + " --expert-parallel", &log), 0) << log;
  expect_same_run(one, two);
  const std::string one6 = data_dir() + "/ep_one6", three = data_dir() + "/ep_three2";
  remove_all(one6);
  remove_all(three);
  ASSERT_EQ(run_moeforge(train_args(config_with_batch(6, 0, true), one6), true).code, 0);
  ASSERT_EQ(run_shell(std::string(MOEFORGE_BIN) + " launch --nproc 3 --master-port 0 -- " + MOEFORGE_BIN + " " +
                          train_args(config_with_batch(2, 0, true), three) + " --expert-parallel",
                      &log),
            0)
      << log;
  expect_same_run(one6, three);
}

// Expert groups smaller than the job: 4 ranks in 2 expert groups of 2 (each group holds every
// expert once, 3 + 2; the groups are data-parallel replicas whose expert gradients are reduced
// across them) = 1 process x batch 8.
TEST(DistTrain, ExpertGroupsOfTwoOnFourRanksEqualOneRankWithTheWholeBatch) {
  const std::string one = data_dir() + "/ep_one8", four = data_dir() + "/ep_four2";
  remove_all(one);
  remove_all(four);
  ASSERT_EQ(run_moeforge(train_args(config_with_batch(8, 0, true), one), true).code, 0);
  std::string log;
  ASSERT_EQ(run_shell(std::string(MOEFORGE_BIN) + " launch --nproc 4 --master-port 0 -- " + MOEFORGE_BIN + " " +
                          train_args(config_with_batch(2, 0, true), four) + " --expert-parallel --expert-group-size 2",
                      &log),
            0)
      << log;
  expect_same_run(one, four);
  auto bad = run_moeforge(train_args(config_with_batch(2, 0, true), data_dir() + "/ep_bad") + " --expert-group-size 2", true);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("--expert-group-size belongs to --expert-parallel"), std::string::npos) << bad.out;
}

TEST(DistTrain, AKilledExpertParallelRunResumesBitForBit) {
  expect_killed_run_resumes(config_with_batch(2, 2, true), " --expert-parallel", data_dir() + "/ep_full",
                            data_dir() + "/ep_killed");
}

TEST(DistTrain, ExpertParallelUsageErrors) {
  auto dense = run_moeforge(train_args(config_with_batch(2), data_dir() + "/ep_dense") + " --expert-parallel", true);
  EXPECT_NE(dense.code, 0);
  EXPECT_NE(dense.out.find("--expert-parallel needs an MoE model"), std::string::npos) << dense.out;
  EXPECT_FALSE(path_exists(data_dir() + "/ep_dense"));
}

// Data-parallel eval: the scoring batches are shared out over the ranks, so the metrics (and
// every per-sample score) are those of one process with the same threads per process (CPU
// reductions depend on the thread count; torchrun and launch give each rank one thread here).
TEST(DistEval, RanksUnderTorchrunAndLaunchReproduceTheOneProcessResultsExactly) {
  ASSERT_TRUE(have_torchrun()) << "torchrun missing: install python3-torch (scripts/install-deps.sh)";
  const std::string dir = data_dir() + "/eval";
  remove_all(dir);
  make_dirs(dir);
  const std::string args = " eval " + std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny --tasks arc_easy,piqa,wikitext" +
                           " --data-dir " + MOEFORGE_TEST_DATA + "/benchmarks --limit 12 --batch-tokens 512";
  auto one = run_moeforge("-q --threads 1" + args + " --output " + dir + "/one.json --log-samples " + dir + "/s1", true);
  ASSERT_EQ(one.code, 0) << one.out;
  std::string log;
  ASSERT_EQ(run_shell("OMP_NUM_THREADS=1 " + torchrun(2) + "-q" + args + " --output " + dir + "/two.json --log-samples " +
                      dir + "/s2", &log), 0) << log;
  ASSERT_EQ(run_shell(std::string(MOEFORGE_BIN) + " launch --nproc 3 --master-port 0 -- " + MOEFORGE_BIN + " -q" + args +
                      " --output " + dir + "/three.json", &log), 0) << log;
  const json r1 = read_json_file(dir + "/one.json");
  EXPECT_EQ(r1.at("results"), read_json_file(dir + "/two.json").at("results"));
  EXPECT_EQ(r1.at("results"), read_json_file(dir + "/three.json").at("results"));
  EXPECT_TRUE(r1.at("results").contains("wikitext"));
  // Per-sample log-likelihoods, bit for bit (the files differ only in their date-stamped names).
  const auto f1 = list_dir(dir + "/s1"), f2 = list_dir(dir + "/s2");
  ASSERT_EQ(f1.size(), 3u);
  ASSERT_EQ(f2.size(), 3u);
  for (size_t i = 0; i < f1.size(); ++i)
    EXPECT_EQ(read_file(dir + "/s1/" + f1[i]), read_file(dir + "/s2/" + f2[i])) << f1[i];
}

// Expert-parallel eval: the experts of tiny-mixtral spread over 2 ranks (torchrun) and 3 ranks
// (launch: 8 experts = 3 + 3 + 2), each rank scoring its share of the batches and idling through
// extra passes when it has fewer. The experts now see rows of both ranks' batches in one GEMM, so
// scores agree with one process up to rounding: every metric within 1e-6 relative.
TEST(DistEval, ExpertParallelRanksMatchTheOneProcessResults) {
  ASSERT_TRUE(have_torchrun()) << "torchrun missing: install python3-torch (scripts/install-deps.sh)";
  const std::string dir = data_dir() + "/eval_ep";
  remove_all(dir);
  make_dirs(dir);
  const std::string args = " eval " + std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny-mixtral --tasks arc_easy,wikitext" +
                           " --data-dir " + MOEFORGE_TEST_DATA + "/benchmarks --limit 10 --batch-tokens 512";
  auto one = run_moeforge("-q --threads 1" + args + " --output " + dir + "/one.json", true);
  ASSERT_EQ(one.code, 0) << one.out;
  std::string log;
  ASSERT_EQ(run_shell("OMP_NUM_THREADS=1 " + torchrun(2) + "-q" + args + " --expert-parallel --output " + dir + "/two.json",
                      &log),
            0)
      << log;
  ASSERT_EQ(run_shell(std::string(MOEFORGE_BIN) + " launch --nproc 3 --master-port 0 -- " + MOEFORGE_BIN + " -q" + args +
                          " --expert-parallel --output " + dir + "/three.json",
                      &log),
            0)
      << log;
  const json r1 = read_json_file(dir + "/one.json").at("results");
  for (const char* other : {"/two.json", "/three.json"}) {
    const json r = read_json_file(dir + other).at("results");
    ASSERT_EQ(r1.size(), r.size()) << other;
    int64_t compared = 0;
    for (const auto& [task, metrics] : r1.items())
      for (const auto& [name, value] : metrics.items()) {
        if (!value.is_number()) continue;
        const double a = value.get<double>(), b = r.at(task).at(name).get<double>();
        EXPECT_NEAR(a, b, 1e-6 * std::max(1.0, std::abs(a))) << other << " " << task << " " << name;
        ++compared;
      }
    EXPECT_GT(compared, 5) << other;
  }
  // A dense model has no experts to spread.
  auto dense = run_moeforge("-q eval " + std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny --tasks arc_easy --data-dir " +
                                MOEFORGE_TEST_DATA + "/benchmarks --limit 2 --expert-parallel",
                            true);
  EXPECT_NE(dense.code, 0);
  EXPECT_NE(dense.out.find("--expert-parallel needs an MoE model"), std::string::npos) << dense.out;
}
