#include "moe/routers/registry.h"

namespace mf::moe {

Registry<RouterEntry>& router_registry() {
  static Registry<RouterEntry> registry = [] {
    Registry<RouterEntry> r("router");
    r.add("linear", linear_router_entry());
    r.add("mlp", mlp_router_entry());
    r.add("avgk", avgk_router_entry());
    return r;
  }();
  return registry;
}

}  // namespace mf::moe
