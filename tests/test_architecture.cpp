// The extension points of docs/architecture.md, exercised from outside the library:
//   * a router registered from this file alone runs through forward, a training step, save and load;
//   * LoRA on the expert projections of Mixtral, Qwen2-MoE, OLMoE and moeforge models acts in the
//     forward pass, receives gradients, and merging it gives the same model;
//   * the LoRA expert bank (shared base, MixLoRA-style) equals its merged dense bank, with
//     gradients checked against finite differences;
//   * a decoder layer's FFN slot can be swapped, and nothing the new block owns is dropped on save;
//   * MoE blocks report their auxiliary losses, which equal the loss formulas written out here.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "io/checkpoint.h"
#include "model/model.h"
#include "model/moe_ffn.h"
#include "model_fixtures.h"
#include "moe/autograd.h"
#include "moe/lora_expert_bank.h"
#include "moe/losses.h"
#include "moe/routers/registry.h"
#include "moe/routers/selection.h"
#include "moe_test_util.h"
#include "train/lora.h"
#include "util/fs.h"

using namespace mf;
using mf::testing_fixtures::tiny_config_json;
using mf::testing_fixtures::tiny_model;

namespace {

std::string temp_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/mf_arch_" + name;
  remove_all(d);
  return d;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

at::Tensor random_ids(int64_t b, int64_t t, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(3, 64, {b, t}, torch::kLong);
}

// A router no file of the library knows: logits = (W x) * exp(log_temp), tensors "w" [E, d]
// and "log_temp" [1].
class ToyRouter : public moe::RouterImpl {
 public:
  ToyRouter(const moe::RouterSpec& s) : RouterImpl(s.dim, s.num_experts, s.selection, s.score, s.noise) {
    w = register_parameter("w", at::zeros({s.num_experts, s.dim}));
    log_temp = register_parameter("log_temp", at::zeros({1}));
  }
  moe::RouterOutput route(const at::Tensor& x, bool training) override {
    return finish(at::linear(x.to(at::kFloat), w) * at::exp(log_temp), training);
  }
  const char* kind() const override { return "toy"; }
  at::Tensor w, log_temp;
};

// Registers "toy" for the lifetime of the object.
struct ToyRegistration {
  ToyRegistration() {
    moe::RouterEntry e;
    e.description = "test router";
    e.make = [](const moe::RouterSpec& s) -> moe::Router { return std::make_shared<ToyRouter>(s); };
    e.tensors = [](const moe::RouterSpec& s) {
      return std::vector<std::pair<std::string, std::vector<int64_t>>>{{"w", {s.num_experts, s.dim}}, {"log_temp", {1}}};
    };
    moe::router_registry().add("toy", e);
  }
  ~ToyRegistration() { moe::router_registry().remove("toy"); }
};

json moeforge_json(const std::string& router) {
  json j = tiny_config_json("llama");
  j["model_type"] = "moeforge";
  j["architectures"] = {"MoeforgeForCausalLM"};
  j["base_model_type"] = "llama";
  j["moe_layers"] = {0, 1};
  j["num_experts"] = 4;
  j["num_experts_per_tok"] = 2;
  j["expert_sizes"] = {{12, 12, 12, 12}, {6, 18, 9, 15}};
  j["router"] = {{"type", router}, {"gate", "renorm"}};
  return j;
}

}  // namespace

TEST(Architecture, RouterRegisteredFromATestRunsForwardTrainSaveLoad) {
  ToyRegistration toy;
  json j = moeforge_json("toy");
  auto m = Model::create(parse_model_config(j, "toy/config.json"));
  m->init_random(3, 0.2);
  m->eval();
  auto params = m->named_parameters();
  ASSERT_NE(params.find("model.layers.0.mlp.router.w"), nullptr);
  ASSERT_NE(params.find("model.layers.1.mlp.router.log_temp"), nullptr);
  const at::Tensor ids = random_ids(2, 7, 1);

  // Forward: the toy router routes (a temperature change changes the logits, hence the output).
  at::Tensor y0;
  {
    at::NoGradGuard ng;
    y0 = m->forward(ids);
    params["model.layers.0.mlp.router.log_temp"].fill_(2.0);
    EXPECT_GT(max_diff(m->forward(ids), y0), 1e-6);
    params["model.layers.0.mlp.router.log_temp"].fill_(0.0);
  }

  // One training step of the router only: its parameters receive gradients and move.
  for (auto& p : m->named_parameters()) p.value().set_requires_grad(is_router_parameter(p.key()));
  m->train();
  torch::optim::SGD sgd(m->parameters(), torch::optim::SGDOptions(0.5));
  at::Tensor logits = m->forward(ids);
  at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, 64}).narrow(0, 0, 13), ids.reshape({-1}).narrow(0, 1, 13)) +
                    m->aux_loss();
  sgd.zero_grad();
  loss.backward();
  const at::Tensor w_before = params["model.layers.0.mlp.router.w"].detach().clone();
  ASSERT_TRUE(params["model.layers.0.mlp.router.w"].grad().defined());
  EXPECT_GT(params["model.layers.0.mlp.router.w"].grad().abs().sum().item<double>(), 0);
  EXPECT_GT(params["model.layers.1.mlp.router.log_temp"].grad().abs().sum().item<double>(), 0);
  sgd.step();
  m->after_optimizer_step();
  EXPECT_GT(max_diff(params["model.layers.0.mlp.router.w"], w_before), 0);
  m->eval();

  // Save and load: the toy tensors travel under their registered names; logits are identical.
  const std::string dir = temp_dir("toy");
  save_checkpoint(dir, j, m->hf_tensors());
  EXPECT_TRUE(Checkpoint::open(dir).contains("model.layers.1.mlp.router.w"));
  auto loaded = Model::load(dir);
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(loaded->forward(ids), m->forward(ids)));
}

TEST(Architecture, UnknownRouterIsAOneLineErrorListingTheRegistered) {
  try {
    parse_model_config(moeforge_json("nope"), "x/config.json");
    FAIL() << "accepted an unknown router";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("x/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("linear, mlp"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
}

TEST(Architecture, LoraOnExpertProjectionsOfEveryMoeFamily) {
  struct Case {
    std::string name;
    json config;
    std::vector<std::string> targets;
  };
  std::vector<Case> cases = {{"mixtral", tiny_config_json("mixtral"), {"w1", "w3", "w2"}},
                             {"qwen2_moe", tiny_config_json("qwen2_moe"), {"gate_proj", "up_proj", "down_proj"}},
                             {"olmoe", tiny_config_json("olmoe"), {"gate_proj", "up_proj", "down_proj"}},
                             {"moeforge", moeforge_json("linear"), {"gate_proj", "up_proj", "down_proj"}}};
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto m = Model::create(parse_model_config(c.config, c.name + "/config.json"));
    m->init_random(5, 0.2);
    m->eval();
    for (auto& p : m->parameters()) p.set_requires_grad(false);
    const at::Tensor ids = random_ids(2, 6, 2);
    at::Tensor base;
    {
      at::NoGradGuard ng;
      base = m->forward(ids);
    }
    LoraOptions o;
    o.r = 4;
    o.alpha = 8;
    o.dropout = 0.0;
    o.targets = c.targets;
    auto lora = std::make_shared<LoraAdapters>(*m, o);
    bool expert_adapted = false;
    for (const auto& n : lora->module_names()) expert_adapted |= n.find(".experts.") != std::string::npos;
    ASSERT_TRUE(expert_adapted);
    // B = 0 (PEFT's initialisation): the base model, through the LoRA bank (another kernel
    // than the base model's fused path, so equal up to fp32 summation order).
    {
      at::NoGradGuard ng;
      EXPECT_LE(max_diff(m->forward(ids), base), 1e-5);
    }
    torch::manual_seed(9);
    {
      at::NoGradGuard ng;
      for (auto& a : lora->adapters()) a->lora_B.normal_(0.0, 0.3);
    }
    at::Tensor adapted;
    {
      at::NoGradGuard ng;
      adapted = m->forward(ids);
    }
    EXPECT_GT(max_diff(adapted, base), 1e-3);  // B != 0 changes the forward
    // Gradients reach A and B of the expert adapters (training forward with autograd).
    at::Tensor y = m->forward(ids);
    EXPECT_LE(max_diff(y.detach(), adapted), 1e-5);  // autograd path == inference path
    y.pow(2).mean().backward();
    int64_t expert_with_grad = 0;
    for (size_t i = 0; i < lora->adapters().size(); ++i) {
      if (lora->module_names()[i].find(".experts.") == std::string::npos) continue;
      const auto& a = lora->adapters()[i];
      if (a->lora_A.grad().defined() && a->lora_B.grad().defined() && a->lora_A.grad().abs().sum().item<double>() > 0 &&
          a->lora_B.grad().abs().sum().item<double>() > 0)
        ++expert_with_grad;
    }
    EXPECT_GT(expert_with_grad, 0);
    // Merged equals unmerged.
    lora->merge();
    at::NoGradGuard ng;
    EXPECT_LE(max_diff(m->forward(ids), adapted), 1e-5);
  }
}

TEST(Architecture, LoraExpertBankWithSharedBaseEqualsItsMergedBank) {
  torch::manual_seed(4);
  const int64_t d = 6, f = 5, E = 3, T = 7, r = 2;
  auto base = std::make_shared<moe::DenseExpertBankImpl>(at::randn({1, 2 * f, d}, at::kDouble),
                                                         at::randn({1, d, f}, at::kDouble), moe::Act::SiLU, true);
  std::vector<moe::LoraExpertDeltas> deltas;
  std::vector<at::Tensor> leaves;
  for (int64_t e = 0; e < E; ++e) {
    auto mk = [&](int64_t in, int64_t out) {
      moe::LoraDelta dl{at::randn({r, in}, at::kDouble).requires_grad_(), at::randn({out, r}, at::kDouble).requires_grad_(),
                        0.7};
      leaves.push_back(dl.A);
      leaves.push_back(dl.B);
      return dl;
    };
    deltas.push_back({mk(d, f), mk(d, f), e == 1 ? moe::LoraDelta{} : mk(f, d)});
  }
  auto bank = std::make_shared<moe::LoraExpertBankImpl>(base, deltas);
  ASSERT_TRUE(bank->shared_base());
  const at::Tensor rw = at::randn({E, d}, at::kDouble);
  moe::MoELayer lora_layer = moe::testing::softmax_topk_layer(rw, bank, 2, true);
  moe::MoELayer merged_layer = moe::testing::softmax_topk_layer(
      rw, std::const_pointer_cast<moe::DenseExpertBankImpl>(bank->dense_equivalent()), 2, true);
  const at::Tensor x = at::randn({T, d}, at::kDouble);
  EXPECT_LE(max_diff(lora_layer->forward(x), merged_layer->forward(x)), 1e-12);
  // Gradients of A and B against central differences.
  const at::Tensor R = at::randn({T, d}, at::kDouble);
  auto f_of = [&] { return (lora_layer->forward(x) * R).sum(); };
  f_of().backward();
  for (const at::Tensor& leaf : leaves) {
    at::Tensor g = leaf.grad().clone();
    at::Tensor flat = leaf.detach().view({-1});
    for (int64_t i = 0; i < flat.numel(); i += 3) {
      const double h = 1e-6, orig = flat[i].item<double>();
      double up, down;
      {
        at::NoGradGuard ng;
        flat[i] = orig + h;
        up = f_of().item<double>();
        flat[i] = orig - h;
        down = f_of().item<double>();
        flat[i] = orig;
      }
      EXPECT_NEAR(g.view({-1})[i].item<double>(), (up - down) / (2 * h), 1e-6);
    }
  }
}

namespace {
// An FFN block that adds a learned bias: what a feature swapped into a layer looks like.
struct BiasBlock : FfnBlock {
  explicit BiasBlock(int64_t h) { bias = register_parameter("extra_bias", at::full({h}, 0.5)); }
  at::Tensor forward(const at::Tensor& x, const FfnContext&) override { return at::zeros_like(x) + bias.to(x.scalar_type()); }
  at::Tensor bias;
};
}  // namespace

TEST(Architecture, FfnSlotSwapsAndItsTensorsAreSaved) {
  for (const std::string family : {"llama", "gpt2", "mixtral"}) {
    SCOPED_TRACE(family);
    auto m = tiny_model(family);
    const at::Tensor ids = random_ids(1, 5, 3);
    at::NoGradGuard ng;
    const at::Tensor before = m->forward(ids);
    const int64_t h = m->config().hidden_size;
    m->set_ffn(1, std::make_shared<BiasBlock>(h));
    EXPECT_GT(max_diff(m->forward(ids), before), 1e-4);
    EXPECT_TRUE(std::dynamic_pointer_cast<BiasBlock>(m->ffn(1)) != nullptr);
    bool saved = false;
    for (const auto& [name, t] : m->hf_tensors()) saved |= name.find("extra_bias") != std::string::npos;
    EXPECT_TRUE(saved);
    // The old block's parameters are gone from the model.
    for (const auto& p : m->named_parameters())
      EXPECT_EQ(p.key().find(family == "gpt2" ? "h.1.mlp.c_fc" : "layers.1." + m->config().ffn_module_name() + ".gate"),
                std::string::npos)
          << p.key();
  }
}

TEST(Architecture, MoeBlocksReportTheirAuxiliaryLosses) {
  const at::Tensor ids = random_ids(2, 6, 4);
  // moeforge HEMoE: sum over MoE layers of coef * T * sum_j f_j r_j P_j, r_j = f_e / F.
  {
    json j = moeforge_json("linear");
    j["router"]["gate"] = "unit";
    j["router"]["aux_loss_coef"] = 0.01;
    auto m = Model::create(parse_model_config(j, "m/config.json"));
    m->init_random(6, 0.3);
    std::vector<at::Tensor> logits;
    m->hooks().add(HookPoint::router_logits, [&](HookEvent& ev) { logits.push_back(ev.tensor); });
    m->train();
    m->forward(ids);
    const auto losses = m->aux_losses();
    ASSERT_EQ(losses.size(), 2u);
    const std::vector<std::vector<double>> sizes = {{12, 12, 12, 12}, {6, 18, 9, 15}};
    for (size_t l = 0; l < 2; ++l) {
      at::Tensor p = at::softmax(logits[l].detach().to(at::kDouble), -1);
      const int64_t T = p.size(0);
      at::Tensor top = std::get<1>(p.topk(2, 1));
      double expect = 0;
      for (int64_t e = 0; e < 4; ++e) {
        const double fe = (top == e).sum().item<double>() / static_cast<double>(T);
        expect += fe * (sizes[l][e] / 48.0) * p.select(1, e).mean().item<double>();
      }
      expect *= 0.01 * static_cast<double>(T);
      EXPECT_NEAR(losses[l].value.item<double>(), expect, 1e-6);
    }
    m->eval();
    m->forward(ids);
    EXPECT_TRUE(m->aux_losses().empty());  // evaluation keeps nothing
  }
  // OLMoE / Qwen2-MoE / Mixtral: HF's load-balancing loss pooled over the MoE layers.
  for (const std::string family : {"olmoe", "qwen2_moe", "mixtral"}) {
    SCOPED_TRACE(family);
    json j = tiny_config_json(family);
    j["router_aux_loss_coef"] = 0.02;
    auto m = Model::create(parse_model_config(j, family + "/config.json"));
    m->init_random(7, 0.3);
    std::vector<at::Tensor> logits;
    m->hooks().add(HookPoint::router_logits, [&](HookEvent& ev) { logits.push_back(ev.tensor.detach()); });
    m->train();
    m->forward(ids);
    const auto losses = m->aux_losses();
    ASSERT_EQ(losses.size(), 1u);
    // E * sum_{j<k, e} f_{j,e} P_e over all layers' tokens (HF load_balancing_loss_func).
    at::Tensor p = at::softmax(at::cat(logits, 0).to(at::kDouble), -1);
    const int64_t N = p.size(0), E = p.size(1), k = 2;
    at::Tensor top = std::get<1>(p.topk(k, 1));
    double expect = 0;
    for (int64_t e = 0; e < E; ++e) expect += (top == e).sum().item<double>() / N * p.select(1, e).mean().item<double>();
    expect *= static_cast<double>(E) * 0.02;
    EXPECT_NEAR(losses[0].value.item<double>(), expect, 1e-6);
  }
}
