// Loading a model directory with some config.json keys replaced (continued training with other
// auxiliary-loss coefficients or router jitter). Model::load is this with no overrides.
#pragma once
#include <memory>
#include <string>

#include "model/model.h"

namespace mf {

// `overrides`: a JSON object whose keys replace config.json's before it is parsed; the weights
// are then validated against the resulting config like Model::load does.
std::shared_ptr<Model> load_model_with_overrides(const std::string& dir, const LoadOptions& options,
                                                 const json& overrides);

}  // namespace mf
