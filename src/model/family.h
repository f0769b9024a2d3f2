// The model-family table: config.json's model_type -> how to read the family's keys, which graph
// to build and which routed MoE block its MoE layers get. parse_model_config, Model::create and
// the "moe" FFN block look families up here instead of branching on them. To add a family, write
// src/model/<family>.cpp with its parser (helpers: model/config_parse.h), its graph (or reuse
// build_llama_family) and its MoE block if any, plus a `FamilyEntry <family>_family()`, and add
// one line to family_registry() (model/registry.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "model/config.h"
#include "util/registry.h"

namespace mf {

class Model;     // model/model.h
class FfnBlock;  // model/ffn_block.h

struct FamilyEntry {
  std::string description;
  Family family;
  // Reads the family's keys of config.json into c (c.model_type, c.origin, c.raw and c.family are set).
  std::function<void(const json& j, const std::string& origin, ModelConfig& c)> parse;
  std::function<std::shared_ptr<Model>(const ModelConfig&)> build;  // the causal LM graph
  std::function<std::shared_ptr<FfnBlock>(const ModelConfig&, int64_t layer)> moe_block;  // null for dense families
};

// Keyed by model_type. supported_model_types() (config.h) lists the built-ins in registration
// order, then any added at run time.
Registry<FamilyEntry>& family_registry();

// The built-in entries (one file each).
FamilyEntry llama_family();      // llama.cpp (the Llama graph)
FamilyEntry mistral_family();    // mistral.cpp
FamilyEntry qwen2_family();      // qwen2.cpp
FamilyEntry gpt2_family();       // gpt2.cpp
FamilyEntry mixtral_family();    // mixtral.cpp
FamilyEntry qwen2_moe_family();  // qwen2_moe.cpp
FamilyEntry olmoe_family();      // olmoe.cpp
FamilyEntry moeforge_family();   // moeforge_moe.cpp

}  // namespace mf
