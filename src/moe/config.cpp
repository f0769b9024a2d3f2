#include "moe/config.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace mf::moe {

int64_t capacity_for(const CapacityConfig& cfg, int64_t tokens, int64_t num_experts, int64_t k,
                     int64_t dropless) {
  const int64_t spe = (tokens + num_experts - 1) / num_experts;
  const int64_t by_factor = k * static_cast<int64_t>(cfg.factor * static_cast<double>(spe));
  switch (cfg.mode) {
    case CapacityMode::None: return dropless;
    case CapacityMode::Factor: return by_factor;
    case CapacityMode::Absolute: return cfg.absolute;
    case CapacityMode::Bounded: return std::min(dropless, by_factor);
  }
  return dropless;
}

const char* to_string(Act a) {
  switch (a) {
    case Act::SiLU: return "silu";
    case Act::GELU: return "gelu";
    case Act::GELUTanh: return "gelu_tanh";
    case Act::ReLU: return "relu";
  }
  return "?";
}
const char* to_string(ScoreFn s) { return s == ScoreFn::Softmax ? "softmax" : "sigmoid"; }
const char* to_string(Selection s) {
  switch (s) {
    case Selection::TopK: return "topk";
    case Selection::TopP: return "topp";
    case Selection::DynKMax: return "dynk_max";
  }
  return "?";
}
const char* to_string(GateMode g) {
  switch (g) {
    case GateMode::Prob: return "prob";
    case GateMode::Renorm: return "renorm";
    case GateMode::UnitST: return "unit_st";
    case GateMode::Ones: return "ones";
  }
  return "?";
}
const char* to_string(CapacityMode c) {
  switch (c) {
    case CapacityMode::None: return "none";
    case CapacityMode::Factor: return "factor";
    case CapacityMode::Absolute: return "absolute";
    case CapacityMode::Bounded: return "bounded";
  }
  return "?";
}

Act parse_act(const std::string& s) {
  if (s == "silu" || s == "swish") return Act::SiLU;
  if (s == "gelu") return Act::GELU;
  if (s == "gelu_tanh" || s == "gelu_new" || s == "gelu_pytorch_tanh") return Act::GELUTanh;
  if (s == "relu") return Act::ReLU;
  fail("unknown expert activation '" + s + "' (expected silu, gelu, gelu_tanh or relu)");
}
ScoreFn parse_score_fn(const std::string& s) {
  if (s == "softmax") return ScoreFn::Softmax;
  if (s == "sigmoid") return ScoreFn::Sigmoid;
  fail("unknown router score function '" + s + "' (expected softmax or sigmoid)");
}
Selection parse_selection(const std::string& s) {
  if (s == "topk" || s == "top_k") return Selection::TopK;
  if (s == "topp" || s == "top_p") return Selection::TopP;
  if (s == "dynk_max") return Selection::DynKMax;
  fail("unknown expert selection '" + s + "' (expected topk, topp or dynk_max)");
}
GateMode parse_gate_mode(const std::string& s) {
  if (s == "prob") return GateMode::Prob;
  if (s == "renorm") return GateMode::Renorm;
  if (s == "unit_st" || s == "unit") return GateMode::UnitST;
  if (s == "ones") return GateMode::Ones;
  fail("unknown gate mode '" + s + "' (expected prob, renorm, unit_st or ones)");
}
CapacityMode parse_capacity_mode(const std::string& s) {
  if (s == "none" || s == "dropless") return CapacityMode::None;
  if (s == "factor") return CapacityMode::Factor;
  if (s == "absolute") return CapacityMode::Absolute;
  if (s == "bounded") return CapacityMode::Bounded;
  fail("unknown capacity mode '" + s + "' (expected none, factor, absolute or bounded)");
}

}  // namespace mf::moe
