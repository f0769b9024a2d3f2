#include "moe/routing_plan.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <type_traits>

#include "moe/kernels.h"
#include "util/error.h"

namespace mf::moe {

RoutingPlan build_routing_plan(const at::Tensor& idx_in, int64_t E, const CapacityConfig& cfg,
                               const at::Tensor& priority, int64_t k_for_capacity) {
  TORCH_CHECK(idx_in.dim() == 2, "routing plan: idx must be [T, K]");
  RoutingPlan p;
  p.idx = idx_in.to(at::kLong).contiguous();
  const int64_t T = p.idx.size(0), K = p.idx.size(1);
  p.tokens = T;
  p.experts = E;
  p.slots = K;
  const int64_t kc = k_for_capacity > 0 ? k_for_capacity : K;
  const int64_t* id = p.idx.data_ptr<int64_t>();
  p.loc = at::full({T, K}, -1, at::kLong);
  int64_t* loc = p.loc.data_ptr<int64_t>();

  const int64_t G = cfg.group_size > 0 ? cfg.group_size : std::max<int64_t>(T, 1);
  const bool bpr = cfg.priority == Priority::BatchPrioritized && priority.defined();
  at::Tensor prio;
  if (bpr) prio = priority.to(at::kFloat).contiguous();

  // Pass 1: locations, group by group, slot-major, in token (or BPR) order.
  std::vector<int64_t> fill(E);
  std::vector<int64_t> order;
  int64_t cap_max = -1;
  for (int64_t g0 = 0; g0 < T; g0 += G) {
    const int64_t g1 = std::min(T, g0 + G);
    order.resize(g1 - g0);
    std::iota(order.begin(), order.end(), g0);
    if (bpr) {
      const float* pr = prio.data_ptr<float>();
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return pr[a] > pr[b]; });
    }
    std::fill(fill.begin(), fill.end(), 0);
    for (int64_t j = 0; j < K; ++j)
      for (int64_t t : order) {
        const int64_t e = id[t * K + j];
        if (e < 0) continue;
        TORCH_CHECK(e < E, "routing plan: expert id ", e, " out of range (E = ", E, ")");
        loc[t * K + j] = fill[e]++;
      }
    const int64_t dropless = fill.empty() ? 0 : *std::max_element(fill.begin(), fill.end());
    const int64_t C = capacity_for(cfg, g1 - g0, E, kc, dropless);
    cap_max = std::max(cap_max, C);
    for (int64_t t = g0; t < g1; ++t)
      for (int64_t j = 0; j < K; ++j) {
        if (id[t * K + j] < 0) continue;
        ++p.routed;
        if (loc[t * K + j] >= C) {
          loc[t * K + j] = -1;
          ++p.dropped;
        }
      }
  }
  p.capacity = cfg.mode == CapacityMode::None ? -1 : cap_max;

  // Pass 2: counting sort of the kept pairs by expert; inside an expert by (group, location).
  p.counts.assign(E, 0);
  for (int64_t i = 0; i < T * K; ++i)
    if (loc[i] >= 0) ++p.counts[id[i]];
  p.offsets.assign(E + 1, 0);
  for (int64_t e = 0; e < E; ++e) p.offsets[e + 1] = p.offsets[e] + p.counts[e];
  const int64_t N = p.offsets[E];
  p.row_token = at::empty({N}, at::kLong);
  p.row_slot = at::empty({N}, at::kLong);
  p.slot_row = at::full({T * K}, -1, at::kLong);
  int64_t* rt = p.row_token.data_ptr<int64_t>();
  int64_t* rs = p.row_slot.data_ptr<int64_t>();
  int64_t* sr = p.slot_row.data_ptr<int64_t>();
  std::vector<int64_t> group_base(E);
  for (int64_t g0 = 0; g0 < T; g0 += G) {
    const int64_t g1 = std::min(T, g0 + G);
    std::fill(fill.begin(), fill.end(), 0);
    for (int64_t i = g0 * K; i < g1 * K; ++i)
      if (loc[i] >= 0) ++fill[id[i]];
    for (int64_t e = 0; e < E; ++e) group_base[e] = p.offsets[e];
    for (int64_t i = g0 * K; i < g1 * K; ++i) {
      if (loc[i] < 0) continue;
      const int64_t row = group_base[id[i]] + loc[i];
      rt[row] = i / K;
      rs[row] = i;
      sr[i] = row;
    }
    for (int64_t e = 0; e < E; ++e) p.offsets[e] += fill[e];  // advance past this group
  }
  // Restore offsets (they were advanced group by group).
  p.offsets.assign(E + 1, 0);
  for (int64_t e = 0; e < E; ++e) p.offsets[e + 1] = p.offsets[e] + p.counts[e];
  return p;
}

namespace {
template <typename T>
using acc_t = std::conditional_t<std::is_same<T, double>::value, double, float>;

// o += w * src (the combine's inner loop); bf16 rows take the AVX-512 kernel.
template <typename S, typename A>
inline void axpy_row(A w, const S* src, A* o, int64_t d) {
  for (int64_t c = 0; c < d; ++c) o[c] += w * static_cast<A>(src[c]);
}
inline void axpy_row(float w, const at::BFloat16* src, float* o, int64_t d) { axpy_bf16(w, src, o, d); }
}

at::Tensor gather_token_rows(const at::Tensor& x_in, const RoutingPlan& plan, at::Tensor out) {
  const at::Tensor x = x_in.contiguous();
  const int64_t N = plan.rows(), d = x.size(1);
  if (!out.defined()) out = at::empty({N, d}, x.options());
  TORCH_CHECK(out.is_contiguous() && out.size(0) == N && out.size(1) == d && out.scalar_type() == x.scalar_type(),
              "gather_token_rows: bad output buffer");
  const int64_t bytes = d * static_cast<int64_t>(x.element_size());
  const char* src = static_cast<const char*>(x.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  const int64_t* rt = plan.row_token.data_ptr<int64_t>();
  at::parallel_for(0, N, std::max<int64_t>(1, 16384 / std::max<int64_t>(bytes, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::memcpy(dst + r * bytes, src + rt[r] * bytes, bytes);
  });
  return out;
}

at::Tensor combine_rows(const at::Tensor& rows_in, const at::Tensor& gates_in, const RoutingPlan& plan,
                        at::ScalarType out_dtype) {
  const at::Tensor rows = rows_in.contiguous();
  const int64_t T = plan.tokens, K = plan.slots, d = rows.size(1);
  const bool dbl = rows.scalar_type() == at::kDouble;
  at::Tensor gates;
  if (gates_in.defined()) gates = gates_in.to(dbl ? at::kDouble : at::kFloat).contiguous();
  const int64_t* sr = plan.slot_row.data_ptr<int64_t>();
  // The sum is accumulated per token in an fp32 (fp64) row and stored once in out_dtype.
  at::Tensor y = at::empty({T, d}, rows.options().dtype(out_dtype));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, rows.scalar_type(), "combine_rows", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* r = rows.data_ptr<scalar_t>();
    const A* g = gates.defined() ? gates.data_ptr<A>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, out_dtype, "combine_rows_out", [&] {
      using O = scalar_t;
      O* out = y.data_ptr<O>();
      at::parallel_for(0, T, std::max<int64_t>(1, 2048 / std::max<int64_t>(d, 1)), [&](int64_t t0, int64_t t1) {
        std::vector<A> acc(d);
        for (int64_t t = t0; t < t1; ++t) {
          std::fill(acc.begin(), acc.end(), A(0));
          for (int64_t j = 0; j < K; ++j) {
            const int64_t row = sr[t * K + j];
            if (row < 0) continue;
            axpy_row(g ? g[row] : A(1), r + row * d, acc.data(), d);
          }
          O* o = out + t * d;
          for (int64_t c = 0; c < d; ++c) o[c] = static_cast<O>(acc[c]);
        }
      });
    });
  });
  return y;
}

std::pair<at::Tensor, at::Tensor> combine_rows_backward(const at::Tensor& dy_in, const at::Tensor& rows_in,
                                                        const at::Tensor& gates_in, const RoutingPlan& plan,
                                                        at::ScalarType rows_dtype) {
  const bool dbl = rows_dtype == at::kDouble;
  const at::ScalarType acc = dbl ? at::kDouble : at::kFloat;
  const at::Tensor dy = dy_in.to(acc).contiguous();
  const int64_t N = plan.rows(), d = dy.size(1);
  at::Tensor gates, rows;
  if (gates_in.defined()) gates = gates_in.to(acc).contiguous();
  if (rows_in.defined()) rows = rows_in.to(rows_dtype).contiguous();
  at::Tensor d_rows = at::empty({N, d}, dy.options().dtype(rows_dtype));
  at::Tensor d_gate = rows.defined() ? at::empty({N}, dy.options()) : at::Tensor();
  const int64_t* rt = plan.row_token.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, rows_dtype, "combine_rows_backward", [&] {
    using A = acc_t<scalar_t>;
    const A* g = gates.defined() ? gates.data_ptr<A>() : nullptr;
    const A* dyp = dy.data_ptr<A>();
    scalar_t* dr = d_rows.data_ptr<scalar_t>();
    const scalar_t* r = rows.defined() ? rows.data_ptr<scalar_t>() : nullptr;
    A* dg = d_gate.defined() ? d_gate.data_ptr<A>() : nullptr;
    at::parallel_for(0, N, std::max<int64_t>(1, 2048 / std::max<int64_t>(d, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row) {
        const A* src = dyp + rt[row] * d;
        const A w = g ? g[row] : A(1);
        scalar_t* o = dr + row * d;
        for (int64_t c = 0; c < d; ++c) o[c] = static_cast<scalar_t>(w * src[c]);
        if (dg) {
          const scalar_t* rr = r + row * d;
          A s = 0;
          for (int64_t c = 0; c < d; ++c) s += src[c] * static_cast<A>(rr[c]);
          dg[row] = s;
        }
      }
    });
  });
  return {d_rows, d_gate};
}

}  // namespace mf::moe

// --- padded expert blocks (moe/plan_padding.h) ----------------------------------------------

namespace mf::moe {

int64_t padded_block_rows(int64_t n) {
  if (n <= 0) return 0;
  int64_t octave = 1;
  while (octave * 2 <= n) octave *= 2;
  const int64_t multiple = std::max<int64_t>(8, octave / 8);
  return (n + multiple - 1) / multiple * multiple;
}

RoutingPlan pad_expert_blocks(const RoutingPlan& p) {
  RoutingPlan q = p;
  const int64_t E = static_cast<int64_t>(p.counts.size());
  q.offsets.assign(E + 1, 0);
  for (int64_t e = 0; e < E; ++e) {
    q.counts[e] = padded_block_rows(p.counts[e]);
    q.offsets[e + 1] = q.offsets[e] + q.counts[e];
  }
  const int64_t N = q.offsets[E];
  q.row_token = at::empty({N}, at::kLong);
  q.row_slot = at::empty({N}, at::kLong);
  q.slot_row = p.slot_row.clone();
  const int64_t* rt = p.row_token.data_ptr<int64_t>();
  const int64_t* rs = p.row_slot.data_ptr<int64_t>();
  int64_t* qt = q.row_token.data_ptr<int64_t>();
  int64_t* qs = q.row_slot.data_ptr<int64_t>();
  int64_t* sr = q.slot_row.data_ptr<int64_t>();
  const int64_t no_slot = p.tokens * p.slots;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t src = p.offsets[e], dst = q.offsets[e], n = p.counts[e];
    for (int64_t i = 0; i < n; ++i) {
      qt[dst + i] = rt[src + i];
      qs[dst + i] = rs[src + i];
      sr[rs[src + i]] = dst + i;
    }
    for (int64_t i = n; i < q.counts[e]; ++i) {
      qt[dst + i] = rt[src];
      qs[dst + i] = no_slot;
    }
  }
  return q;
}

}  // namespace mf::moe
