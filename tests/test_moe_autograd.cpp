// Custom autograd functions and the layer's gradients against central finite differences in
// fp64 (moe_routing_training.md §6.6 item 10).
#include <gtest/gtest.h>

#include "moe/autograd.h"
#include "moe/expert_bank.h"
#include "moe/moe_layer.h"
#include "moe/routers/linear_router.h"
#include "moe_test_util.h"

using namespace mf::moe;
using mf::moe::testing::fd_check;

TEST(MoeAutograd, GatherAndCombineMatchFiniteDifferences) {
  torch::manual_seed(21);
  const int64_t T = 5, d = 3;
  at::Tensor idx = at::tensor({0, 2, 1, 0, 2, -1, 1, 2, 0, 1}, at::kLong).reshape({T, 2});
  CapacityConfig cap;
  cap.mode = CapacityMode::Absolute;
  cap.absolute = 3;  // expert 0 and 2 fit; drops exercise the -1 rows
  RoutingPlan plan = build_routing_plan(idx, 3, cap);
  at::Tensor x = at::randn({T, d}, at::kDouble).requires_grad_(true);
  at::Tensor gates = at::rand({plan.rows()}, at::kDouble).requires_grad_(true);
  at::Tensor R = at::randn({T, d}, at::kDouble);
  auto f = [&] { return (combine(gather_rows(x, plan) * 1.5, gates, plan, at::kDouble) * R).sum(); };
  f().backward();
  EXPECT_LT(fd_check(f, x.detach(), x.grad()), 1e-8);
  EXPECT_LT(fd_check(f, gates.detach(), gates.grad()), 1e-8);
}

TEST(MoeAutograd, LayerGradientsMatchFiniteDifferences) {
  torch::manual_seed(22);
  const int64_t d = 6, E = 3, T = 5;
  for (int variant = 0; variant < 3; ++variant) {
    ExpertBank bank(nullptr);
    if (variant == 2) {  // heterogeneous widths, GELU with biases
      bank = std::make_shared<DenseExpertBankImpl>(std::vector<at::Tensor>{at::randn({3, d}, at::kDouble), at::randn({5, d}, at::kDouble),
                                                at::randn({2, d}, at::kDouble)},
                        std::vector<at::Tensor>{at::randn({d, 3}, at::kDouble), at::randn({d, 5}, at::kDouble),
                                                at::randn({d, 2}, at::kDouble)},
                        Act::GELU, false,
                        std::vector<at::Tensor>{at::randn({3}, at::kDouble), at::randn({5}, at::kDouble),
                                                at::randn({2}, at::kDouble)},
                        std::vector<at::Tensor>{at::randn({d}, at::kDouble), at::randn({d}, at::kDouble),
                                                at::randn({d}, at::kDouble)});
    } else {
      bank = expert_bank_from_stacked(at::randn({E, 4, d}, at::kDouble), at::randn({E, 4, d}, at::kDouble),
                                      at::randn({E, d, 4}, at::kDouble));
    }
    SelectionConfig sel;
    sel.k = 2;
    sel.gate = variant == 0 ? GateMode::Renorm : GateMode::Prob;
    MoELayer layer(bank, LinearRouter(at::randn({E, d}, at::kDouble), sel).ptr());
    at::Tensor x = at::randn({T, d}, at::kDouble).requires_grad_(true);
    at::Tensor R = at::randn({T, d}, at::kDouble);
    auto f = [&] { return (layer->forward(x) * R).sum(); };
    layer->zero_grad();
    f().backward();
    EXPECT_LT(fd_check(f, x.detach(), x.grad()), 1e-6) << "variant " << variant;
    for (auto& p : layer->named_parameters())
      EXPECT_LT(fd_check(f, p.value().detach(), p.value().grad()), 1e-6) << "variant " << variant << " " << p.key();
  }
}
