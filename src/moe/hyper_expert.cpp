#include "moe/hyper_expert.h"

#include <cmath>
#include <set>

#include "util/error.h"

namespace mf::moe {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Tokens per chunk: `fixed`, or so that a chunk's [Tc, width] intermediate stays near 4M elements.
int64_t chunk_tokens(int64_t width, int64_t fixed) {
  return fixed > 0 ? fixed : std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(width, 1));
}

// y[t, q] = sum_{p, m} W[p, q, m] u[t, p] h[t, m]. Order: u first (P = u W viewed [p, q m], then
// contracted with h; [Tc, q m] per chunk) when q <= p, else the outer product (u x h) [Tc, p m]
// against W permuted to [p m, q]. The backward recomputes the chunk intermediates.
struct BilinearContract : torch::autograd::Function<BilinearContract> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& h, const at::Tensor& W,
                            int64_t chunk) {
    ctx->save_for_backward({u, h, W});
    ctx->saved_data["chunk"] = chunk;
    const int64_t T = u.size(0), p = W.size(0), q = W.size(1), m = W.size(2);
    at::Tensor y = at::empty({T, q}, u.options());
    if (q <= p) {
      const at::Tensor Wv = W.reshape({p, q * m});
      const int64_t step = chunk_tokens(q * m, chunk);
      for (int64_t t0 = 0; t0 < T; t0 += step) {
        const int64_t n = std::min(step, T - t0);
        at::Tensor P = u.narrow(0, t0, n).mm(Wv).view({n, q, m});
        y.narrow(0, t0, n).copy_(at::bmm(P, h.narrow(0, t0, n).unsqueeze(2)).squeeze(2));
      }
    } else {
      const at::Tensor Wz = W.permute({0, 2, 1}).reshape({p * m, q});
      const int64_t step = chunk_tokens(p * m, chunk);
      for (int64_t t0 = 0; t0 < T; t0 += step) {
        const int64_t n = std::min(step, T - t0);
        at::Tensor Z = (u.narrow(0, t0, n).unsqueeze(2) * h.narrow(0, t0, n).unsqueeze(1)).reshape({n, p * m});
        at::Tensor out = y.narrow(0, t0, n);
        at::mm_out(out, Z, Wz);
      }
    }
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &u = saved[0], &h = saved[1], &W = saved[2];
    const at::Tensor g = grads[0].contiguous();
    const int64_t T = u.size(0), p = W.size(0), q = W.size(1), m = W.size(2);
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const bool need_u = ctx->needs_input_grad(0), need_h = ctx->needs_input_grad(1), need_w = ctx->needs_input_grad(2);
    at::Tensor gu = need_u ? at::empty_like(u) : at::Tensor();
    at::Tensor gh = need_h ? at::empty_like(h) : at::Tensor();
    at::Tensor gW;
    if (q <= p) {
      const at::Tensor Wv = W.reshape({p, q * m});
      at::Tensor gWv = need_w ? at::zeros({p, q * m}, W.options()) : at::Tensor();
      const int64_t step = chunk_tokens(q * m, chunk);
      for (int64_t t0 = 0; t0 < T; t0 += step) {
        const int64_t n = std::min(step, T - t0);
        const at::Tensor uc = u.narrow(0, t0, n), hc = h.narrow(0, t0, n), gc = g.narrow(0, t0, n);
        if (need_h) {
          at::Tensor P = uc.mm(Wv).view({n, q, m});
          gh.narrow(0, t0, n).copy_(at::bmm(gc.unsqueeze(1), P).squeeze(1));
        }
        if (need_u || need_w) {
          at::Tensor G = (gc.unsqueeze(2) * hc.unsqueeze(1)).reshape({n, q * m});
          if (need_u) {
            at::Tensor out = gu.narrow(0, t0, n);
            at::mm_out(out, G, Wv.t());
          }
          if (need_w) gWv.addmm_(uc.t(), G);
        }
      }
      if (need_w) gW = gWv.view({p, q, m});
    } else {
      const at::Tensor Wz = W.permute({0, 2, 1}).reshape({p * m, q});
      at::Tensor gWz = need_w ? at::zeros({p * m, q}, W.options()) : at::Tensor();
      const int64_t step = chunk_tokens(p * m, chunk);
      for (int64_t t0 = 0; t0 < T; t0 += step) {
        const int64_t n = std::min(step, T - t0);
        const at::Tensor uc = u.narrow(0, t0, n), hc = h.narrow(0, t0, n), gc = g.narrow(0, t0, n);
        if (need_w) gWz.addmm_((uc.unsqueeze(2) * hc.unsqueeze(1)).reshape({n, p * m}).t(), gc);
        if (need_u || need_h) {
          at::Tensor gZ = gc.mm(Wz.t()).view({n, p, m});
          if (need_u) gu.narrow(0, t0, n).copy_(at::bmm(gZ, hc.unsqueeze(2)).squeeze(2));
          if (need_h) gh.narrow(0, t0, n).copy_(at::bmm(uc.unsqueeze(1), gZ).squeeze(1));
        }
      }
      if (need_w) gW = gWz.view({p, m, q}).permute({0, 2, 1}).contiguous();
    }
    return {gu, gh, gW, at::Tensor()};
  }
};

void hyperfanin(const torch::nn::Linear& lin, double m, double fan) {
  torch::NoGradGuard ng;
  const double bound = 1e-3 * std::sqrt(3.0 / (m * fan));
  lin->weight.uniform_(-bound, bound);
  lin->bias.zero_();
}

}  // namespace

HyperExpertImpl::HyperExpertImpl(int64_t num_experts, const HyperMoeOptions& opt) {
  expert_embedding = register_module(
      "expert_embedding", torch::nn::Embedding(torch::nn::EmbeddingOptions(num_experts, opt.experts_embedding_dim)));
  processor = register_module("processor",
                              torch::nn::Sequential(torch::nn::Linear(opt.experts_embedding_dim, opt.process_dim),
                                                    torch::nn::ReLU(),
                                                    torch::nn::Linear(opt.process_dim, opt.hypernet_input)));
}

void HyperExpertImpl::reset_parameters() {
  expert_embedding->reset_parameters();
  for (auto& m : processor->children())
    if (auto* lin = m->as<torch::nn::LinearImpl>()) lin->reset_parameters();
}

at::Tensor HyperExpertImpl::process(const at::Tensor& selected) {
  const at::Tensor& emb = expert_embedding->weight;
  at::Tensor s = (1 - selected.to(emb.scalar_type())).mm(emb);  // sum of the unselected rows
  return processor->forward(s);
}

HyperGeneratorImpl::HyperGeneratorImpl(int64_t dim, int64_t num_layers, const HyperMoeOptions& opt)
    : dim_(dim), opt_(opt) {
  const int64_t m = opt.hypernetwork_bottleneck, a = opt.adapter_dim;
  layer_embedding = register_module("layer_embedding",
                                    torch::nn::Embedding(torch::nn::EmbeddingOptions(num_layers, opt.layer_emb_dim)));
  bottleneck = register_module("bottleneck", torch::nn::Linear(opt.hypernet_input + opt.layer_emb_dim, m));
  down_weight = register_module("down_weight", torch::nn::Linear(m, dim * a));
  down_bias = register_module("down_bias", torch::nn::Linear(m, a));
  up_weight = register_module("up_weight", torch::nn::Linear(m, a * dim));
  up_bias = register_module("up_bias", torch::nn::Linear(m, dim));
  init_heads();
}

void HyperGeneratorImpl::reset_parameters() {
  layer_embedding->reset_parameters();
  bottleneck->reset_parameters();
  init_heads();
}

void HyperGeneratorImpl::init_heads() {
  const double m = static_cast<double>(opt_.hypernetwork_bottleneck);
  hyperfanin(down_weight, m, static_cast<double>(dim_));
  hyperfanin(up_weight, m, static_cast<double>(opt_.adapter_dim));
  hyperfanin(down_bias, m, 1.0);
  hyperfanin(up_bias, m, 1.0);
}

at::Tensor HyperGeneratorImpl::hidden(const at::Tensor& z, int64_t layer) {
  at::Tensor le = layer_embedding->weight[layer].unsqueeze(0).expand({z.size(0), opt_.layer_emb_dim});
  return at::relu(bottleneck->forward(at::cat({z, le}, 1)));
}

at::Tensor bilinear_contract(const at::Tensor& u, const at::Tensor& h, const at::Tensor& W, int64_t chunk) {
  TORCH_CHECK(u.dim() == 2 && h.dim() == 2 && W.dim() == 3 && u.size(0) == h.size(0) && W.size(0) == u.size(1) &&
                  W.size(2) == h.size(1),
              "bilinear_contract: u [T, p], h [T, m], W [p, q, m]");
  return BilinearContract::apply(u.contiguous(), h.contiguous(), W.contiguous(), chunk);
}

at::Tensor hyper_expert_output(HyperExpertImpl& expert, HyperGeneratorImpl& gen, int64_t layer,
                               const at::Tensor& x, const at::Tensor& idx, HyperPath path) {
  const int64_t T = x.size(0), d = gen.dim(), a = gen.adapter_dim();
  const int64_t E = expert.expert_embedding->weight.size(0);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == d, "hyper_expert_output: x must be [T, ", d, "]");
  const at::ScalarType dt = gen.bottleneck->weight.scalar_type();
  const at::Tensor xin = x.to(dt);
  if (T == 0) return at::zeros({0, d}, x.options());

  // Distinct selected sets of the batch (masks [S, E]) and each token's set.
  at::Tensor sel;
  {
    at::NoGradGuard ng;
    at::Tensor slots = idx.to(at::kLong).masked_fill(idx.lt(0), E);  // empty slot -> spare column E
    sel = at::zeros({T, E + 1}, at::kFloat).scatter_(1, slots, 1.0).narrow(1, 0, E);
  }
  auto [sets, inverse, counts] = at::unique_dim(sel, 0, /*sorted=*/true, /*return_inverse=*/true, /*return_counts=*/true);
  const int64_t S = sets.size(0);
  at::Tensor h = gen.hidden(expert.process(sets), layer);  // [S, m]

  const bool grouped = path == HyperPath::Grouped || (path == HyperPath::Auto && 4 * S <= T);
  if (grouped) {
    at::Tensor Wd = gen.down_weight->forward(h).view({S, d, a});
    at::Tensor bd = gen.down_bias->forward(h);
    at::Tensor Wu = gen.up_weight->forward(h).view({S, a, d});
    at::Tensor bu = gen.up_bias->forward(h);
    at::Tensor order = std::get<1>(at::sort(inverse, /*stable=*/true, /*dim=*/0, /*descending=*/false));
    const auto n = counts.to(at::kLong).contiguous();
    std::vector<at::Tensor> outs;
    int64_t off = 0;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t cnt = n.data_ptr<int64_t>()[s];
      at::Tensor xs = xin.index_select(0, order.narrow(0, off, cnt));
      at::Tensor act = at::relu(at::addmm(bd[s], xs, Wd[s]));
      outs.push_back(at::addmm(bu[s], act, Wu[s]));
      off += cnt;
    }
    return at::cat(outs).index_select(0, at::argsort(order)).to(x.scalar_type());
  }
  const int64_t m = h.size(1);
  at::Tensor ht = h.index_select(0, inverse);  // [T, m]: per-token generator state, not weights
  at::Tensor pre = bilinear_contract(xin, ht, gen.down_weight->weight.view({d, a, m})) +
                   xin.mm(gen.down_weight->bias.view({d, a})) + gen.down_bias->forward(ht);
  at::Tensor act = at::relu(pre);
  at::Tensor o = bilinear_contract(act, ht, gen.up_weight->weight.view({a, d, m})) +
                 act.mm(gen.up_weight->bias.view({a, d})) + gen.up_bias->forward(ht);
  return o.to(x.scalar_type());
}

TensorShapes hyper_expert_tensors(int64_t E, const HyperMoeOptions& o) {
  return {{"expert_embedding.weight", {E, o.experts_embedding_dim}},
          {"processor.0.weight", {o.process_dim, o.experts_embedding_dim}},
          {"processor.0.bias", {o.process_dim}},
          {"processor.2.weight", {o.hypernet_input, o.process_dim}},
          {"processor.2.bias", {o.hypernet_input}}};
}

TensorShapes hyper_generator_tensors(int64_t d, int64_t L, const HyperMoeOptions& o) {
  const int64_t m = o.hypernetwork_bottleneck, a = o.adapter_dim;
  return {{"layer_embedding.weight", {L, o.layer_emb_dim}},
          {"bottleneck.weight", {m, o.hypernet_input + o.layer_emb_dim}},
          {"bottleneck.bias", {m}},
          {"down_weight.weight", {d * a, m}},
          {"down_weight.bias", {d * a}},
          {"down_bias.weight", {a, m}},
          {"down_bias.bias", {a}},
          {"up_weight.weight", {a * d, m}},
          {"up_weight.bias", {a * d}},
          {"up_bias.weight", {d, m}},
          {"up_bias.bias", {d}}};
}

HyperMoeOptions parse_hypermoe_options(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) fail_file(origin, "key 'hypermoe' must be an object");
  HyperMoeOptions o;
  const std::pair<const char*, int64_t*> keys[] = {{"experts_embedding_dim", &o.experts_embedding_dim},
                                                   {"process_dim", &o.process_dim},
                                                   {"hypernet_input", &o.hypernet_input},
                                                   {"hypernetwork_bottleneck", &o.hypernetwork_bottleneck},
                                                   {"layer_emb_dim", &o.layer_emb_dim},
                                                   {"adapter_dim", &o.adapter_dim}};
  std::set<std::string> known;
  for (const auto& [name, field] : keys) {
    known.insert(name);
    auto it = j.find(name);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > (int64_t{1} << 20))
      fail_file(origin, std::string("hypermoe.") + name + " must be an integer in 1..1048576");
    *field = it->get<int64_t>();
  }
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.count(it.key())) fail_file(origin, "unknown key 'hypermoe." + it.key() + "'");
  return o;
}

nlohmann::json to_json(const HyperMoeOptions& o) {
  return {{"experts_embedding_dim", o.experts_embedding_dim}, {"process_dim", o.process_dim},
          {"hypernet_input", o.hypernet_input},               {"hypernetwork_bottleneck", o.hypernetwork_bottleneck},
          {"layer_emb_dim", o.layer_emb_dim},                 {"adapter_dim", o.adapter_dim}};
}

}  // namespace mf::moe
