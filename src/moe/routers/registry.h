// The router table: name -> how to build a router for one MoE layer and which checkpoint
// tensors it owns. The moeforge family's `router.type` is a name in this table, and the family
// files of Mixtral / Qwen2-MoE / OLMoE build their "linear" router through it. To add a router,
// write src/moe/routers/<name>_router.{h,cpp} with a RouterImpl subclass and a
// `RouterEntry <name>_router_entry()`, and add one line to router_registry() (registry.cpp);
// code outside the library (a test) may add() its own entry at run time.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "moe/routers/router.h"
#include "util/registry.h"

namespace mf::moe {

// What a router factory gets for one layer.
struct RouterSpec {
  int64_t dim = 0, num_experts = 0;
  SelectionConfig selection;
  ScoreFn score = ScoreFn::Softmax;
  RouterNoise noise;
  nlohmann::json config = nlohmann::json::object();  // the config's router section (router-specific keys)
};

// What a router's initialisation for a freshly split layer gets (dense -> MoE, src/split).
struct RouterInit {
  std::vector<at::Tensor> keys;  // per expert: the gate rows of its neurons [f_e, d] (fp32; empty for avg-k)
  uint64_t seed = 0;             // already specific to the layer
};

struct RouterEntry {
  std::string description;
  // A router with uninitialised (or default-initialised) parameters; checkpoints fill them.
  std::function<Router(const RouterSpec&)> make;
  // Its checkpoint tensors, relative to the router module ("weight", "0.weight"), with shapes.
  std::function<std::vector<std::pair<std::string, std::vector<int64_t>>>(const RouterSpec&)> tensors;
  // Initial tensors (names as in `tensors`) for a layer a split just made; null: the router
  // cannot be the router of a split.
  std::function<std::vector<std::pair<std::string, at::Tensor>>(const RouterSpec&, const RouterInit&)> init;
  // Computed from the expert weights (EMoE avg-k) instead of trained: the MoE block calls
  // after_optimizer_step(bank) whenever the experts change.
  bool from_experts = false;
};

Registry<RouterEntry>& router_registry();

// The built-in entries (one file each).
RouterEntry linear_router_entry();
RouterEntry mlp_router_entry();
RouterEntry avgk_router_entry();
RouterEntry noisy_topk_router_entry();
// GMoE's graph router: not in the table until the LoRA-MoE recipe (issue 17) saves and loads its
// buffers (expert features X, edge list) with a model.
RouterEntry graph_router_entry();

}  // namespace mf::moe
