// Arbitrary bytes as a .safetensors file: opening succeeds (then every tensor is readable) or
// throws mf::Error.
#include "fuzz_target.h"
#include "io/safetensors.h"
#include "util/error.h"

MOEFORGE_FUZZ_TARGET(safetensors) {
  const std::string path = mf::fuzz::write_input(data, size, "model.safetensors");
  try {
    auto st = mf::SafetensorsFile::open(path);
    for (const auto& t : st->tensors()) {
      if (t.nbytes() > (1u << 24)) continue;  // keep iterations fast; bounds were validated
      auto x = st->get(t.name);
      if (x.numel() > 0) (void)x.flatten()[x.numel() - 1].item<double>();
    }
  } catch (const mf::Error&) {
  }
}
