// Arbitrary bytes as a model's config.json: parsed (JSON depth and number limits), validated
// against the size limits, then the tensor list and parameter counts derived from it — the
// arithmetic an absurd config would overflow.
#include "fuzz_target.h"
#include "model/config.h"
#include "util/error.h"

MOEFORGE_FUZZ_TARGET(config_json) {
  const std::string path = mf::fuzz::write_input(data, size, "config.json");
  try {
    mf::ModelConfig cfg = mf::read_model_config(path);
    (void)mf::expected_tensors(cfg);
    (void)mf::total_parameters(cfg);
    (void)mf::active_parameter_range(cfg);
  } catch (const mf::Error&) {
  }
}
