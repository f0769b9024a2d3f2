// Arbitrary bytes as a training config (`train --config`): the pretrain and router recipes'
// readers either return a validated config or throw mf::Error.
#include "fuzz_target.h"
#include "train/pretrain.h"
#include "train/router_config.h"
#include "util/error.h"

MOEFORGE_FUZZ_TARGET(train_config) {
  const std::string path = mf::fuzz::write_input(data, size, "train.json");
  try {
    (void)mf::load_pretrain_config(path);
  } catch (const mf::Error&) {
  }
  try {
    (void)mf::load_router_config(path);
  } catch (const mf::Error&) {
  }
}
