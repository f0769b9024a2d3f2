#include "moe/routers/registry.h"

namespace mf::moe {

// Declared here, not in registry.h: only this table needs it (moe/routers/merged_router.h).
RouterEntry merged_router_entry();

Registry<RouterEntry>& router_registry() {
  static Registry<RouterEntry> registry = [] {
    Registry<RouterEntry> r("router");
    r.add("linear", linear_router_entry());
    r.add("mlp", mlp_router_entry());
    r.add("avgk", avgk_router_entry());
    r.add("merged", merged_router_entry());
    r.add("noisy_topk", noisy_topk_router_entry());
    return r;
  }();
  return registry;
}

}  // namespace mf::moe
