#include "model/hooks.h"

#include <algorithm>

namespace mf {

const char* hook_point_name(HookPoint p) {
  switch (p) {
    case HookPoint::ffn_input: return "ffn_input";
    case HookPoint::ffn_intermediate: return "ffn_intermediate";
    case HookPoint::router_logits: return "router_logits";
    case HookPoint::expert_output: return "expert_output";
    case HookPoint::block_output: return "block_output";
    case HookPoint::ffn_preact: return "ffn_preact";
  }
  return "?";
}

int Hooks::add(HookPoint point, HookFn fn, bool backward, int layer) {
  entries_.push_back(Entry{next_id_, point, layer, backward, std::move(fn)});
  return next_id_++;
}

void Hooks::remove(int id) {
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.id == id; }),
                 entries_.end());
}

void Hooks::clear() { entries_.clear(); }

bool Hooks::wants(HookPoint point, int layer) const {
  for (const auto& e : entries_)
    if (e.point == point && (e.layer < 0 || e.layer == layer)) return true;
  return false;
}

at::Tensor Hooks::fire(HookPoint point, int layer, const at::Tensor& t, const at::Tensor& valid, int expert,
                       const at::Tensor& tokens) {
  at::Tensor out = t;
  for (const auto& e : entries_) {
    if (e.point != point || (e.layer >= 0 && e.layer != layer)) continue;
    if (!e.backward) {
      HookEvent ev;
      ev.layer = layer;
      ev.point = point;
      ev.tensor = out;
      ev.expert = expert;
      ev.tokens = tokens;
      ev.valid = valid;
      e.fn(ev);
      if (ev.replacement.defined()) {
        TORCH_CHECK(ev.replacement.sizes() == out.sizes(), "hook replacement for ", hook_point_name(point),
                    " must keep the shape ", out.sizes());
        out = ev.replacement;
      }
    }
  }
  for (const auto& e : entries_) {
    if (e.point != point || (e.layer >= 0 && e.layer != layer) || !e.backward) continue;
    if (!out.requires_grad()) continue;
    HookFn fn = e.fn;
    out.register_hook([fn, layer, point, expert, tokens, valid](const at::Tensor& grad) {
      HookEvent ev;
      ev.layer = layer;
      ev.point = point;
      ev.backward = true;
      ev.tensor = grad;
      ev.expert = expert;
      ev.tokens = tokens;
      ev.valid = valid;
      fn(ev);
    });
  }
  return out;
}

}  // namespace mf
