#include "merge/represent.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "merge/hclust.h"
#include "util/error.h"
#include "util/str.h"

namespace mf::merge {

Representation parse_representation(const std::string& name) {
  if (name == "expert-output") return Representation::ExpertOutput;
  if (name == "router-logits") return Representation::RouterLogits;
  if (name == "weights") return Representation::Weights;
  fail("--representation: '" + name + "' is not expert-output, router-logits or weights");
}

std::vector<Representation> parse_representations(const std::string& name) {
  if (!is_combined_representation(name)) return {parse_representation(name)};
  const std::vector<std::string> parts = split(name, '+');
  if (parts.size() > 3)
    fail("--representation: '" + name + "' combines " + std::to_string(parts.size()) +
         " representations; K-means combines two or three (a+b or a+b+c of expert-output, router-logits, weights)");
  std::vector<Representation> out;
  for (const std::string& part : parts) {
    if (part != "expert-output" && part != "router-logits" && part != "weights")
      fail("--representation: '" + part + "' in '" + name + "' is not expert-output, router-logits or weights");
    out.push_back(parse_representation(part));
  }
  return out;
}

bool is_combined_representation(const std::string& name) { return name.find('+') != std::string::npos; }

const char* to_string(Representation r) {
  switch (r) {
    case Representation::ExpertOutput: return "expert-output";
    case Representation::RouterLogits: return "router-logits";
    case Representation::Weights: return "weights";
  }
  return "?";
}

Geometry geometry_from_gram(std::vector<double> gram, int64_t n, double dim) {
  if (n < 1) fail(cat("expert representation: no experts (n = ", n, ")"));
  if (static_cast<int64_t>(gram.size()) != n * n)
    fail(cat("expert representation: a Gram matrix of ", gram.size(), " values for ", n, " experts"));
  for (size_t i = 0; i < gram.size(); ++i)
    if (!std::isfinite(gram[i]))
      fail(cat("expert representation: non-finite inner product ", gram[i], " (experts ", static_cast<int64_t>(i) / n,
               ", ", static_cast<int64_t>(i) % n, ")"));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) {
      const double v = 0.5 * (gram[i * n + j] + gram[j * n + i]);
      gram[i * n + j] = gram[j * n + i] = v;
    }
  Geometry g;
  g.n = n;
  g.dim = dim;
  g.gram = std::move(gram);
  return g;
}

Geometry geometry_from_features(const std::vector<double>& X, int64_t n, int64_t d) {
  if (n < 1 || d < 1 || static_cast<int64_t>(X.size()) != n * d)
    fail(cat("expert representation: ", X.size(), " values for ", n, " experts of dimension ", d));
  std::vector<double> G(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) {
      double s = 0.0;
      for (int64_t c = 0; c < d; ++c) s += X[i * d + c] * X[j * d + c];
      G[i * n + j] = G[j * n + i] = s;
    }
  return geometry_from_gram(std::move(G), n, static_cast<double>(d));
}

std::vector<double> squared_distances(const Geometry& g) {
  const int64_t n = g.n;
  std::vector<double> D2(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) {
      const double v = std::max(0.0, g.gram[i * n + i] + g.gram[j * n + j] - 2.0 * g.gram[i * n + j]);
      D2[i * n + j] = D2[j * n + i] = v;
    }
  return D2;
}

std::vector<double> distances(const Geometry& g) {
  std::vector<double> D = squared_distances(g);
  for (double& v : D) v = std::sqrt(v);
  return D;
}

std::vector<double> cosine_similarity(const Geometry& g) {
  const int64_t n = g.n;
  std::vector<double> S(static_cast<size_t>(n * n), 1.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) {
      const double norm = std::sqrt(std::max(0.0, g.gram[i * n + i]) * std::max(0.0, g.gram[j * n + j]));
      const double cos = g.gram[i * n + j] / std::max(norm, 1e-7);
      S[i * n + j] = S[j * n + i] = (cos + 1.0) / 2.0;
    }
  return S;
}

std::vector<int64_t> representatives_from_squared_distances(const std::vector<double>& D2, int64_t n,
                                                            const std::vector<int64_t>& labels) {
  if (static_cast<int64_t>(D2.size()) != n * n || static_cast<int64_t>(labels.size()) != n)
    fail(cat("representative expert: ", D2.size(), " distances and ", labels.size(), " labels for ", n, " experts"));
  const std::vector<std::vector<int64_t>> members = cluster_members(labels);
  std::vector<int64_t> reps;
  for (const std::vector<int64_t>& C : members) {
    if (C.empty()) fail("representative expert: a cluster has no member");
    const double size = static_cast<double>(C.size());
    double spread = 0.0;  // Σ_{c,c'} ‖v_c − v_c'‖²
    for (int64_t a : C)
      for (int64_t b : C) spread += D2[a * n + b];
    int64_t best = -1;
    double best_dist = std::numeric_limits<double>::infinity();
    for (int64_t j : C) {
      double s = 0.0;
      for (int64_t c : C) s += D2[j * n + c];
      const double dist = s / size - spread / (2.0 * size * size);
      if (dist < best_dist) best = j, best_dist = dist;
    }
    reps.push_back(best);
  }
  return reps;
}

std::vector<double> embedding(const Geometry& g) {
  const int64_t n = g.n;
  const std::vector<double> D2 = squared_distances(g);
  // B = −½ J D2 J (J = I − 11ᵀ/n): the Gram matrix of the centred points.
  at::Tensor D = at::tensor(D2, at::kDouble).reshape({n, n});
  const at::Tensor J = at::eye(n, at::kDouble) - 1.0 / static_cast<double>(n);
  at::Tensor B = J.mm(D).mm(J) * -0.5;
  B = (B + B.t()) * 0.5;
  auto [values, vectors] = at::linalg_eigh(B);
  const at::Tensor X = (vectors * values.clamp_min(0.0).sqrt().unsqueeze(0)).contiguous();  // [n, n]
  return std::vector<double>(X.data_ptr<double>(), X.data_ptr<double>() + X.numel());
}

}  // namespace mf::merge
