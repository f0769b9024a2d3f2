// HC-SMoE's clustering (src/merge/hclust.h, src/merge/kmeans.h): every case of SciPy's golden
// file (labels exactly; merge heights to the file's 6 decimals), hand-derived dendrograms, ties
// resolved as SciPy 1.10.1 resolves them (expected values computed with scipy.cluster.hierarchy
// linkage + cut_tree), representatives, the reference's K-means on separated blobs, bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "merge/hclust.h"
#include "merge/kmeans.h"
#include "test_helpers.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"

using namespace mf;
using namespace mf::merge;
using mf::testing_helpers::error_of;

namespace {

const Linkage kAll[] = {Linkage::Average, Linkage::Single, Linkage::Complete, Linkage::Ward};

// The golden heights are SciPy's Z[:,2] rounded to 6 decimals: our heights must agree with them
// to that rounding (SciPy's unrounded heights are matched to ~1e-15; the 1e-9 is the slack).
constexpr double kGoldenTol = 5e-7 + 1e-9;

std::vector<double> rows_of(const json& X) {
  std::vector<double> out;
  for (const json& row : X)
    for (const json& v : row) out.push_back(v.get<double>());
  return out;
}

std::vector<int64_t> identity(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

void expect_scipy_case(const std::vector<double>& X, int64_t n, int64_t d, int64_t r, Linkage m,
                       const std::vector<int64_t>& labels, const std::vector<double>& heights, double tol) {
  const Dendrogram z = linkage(X, n, d, m);
  ASSERT_EQ(z.merged.size(), static_cast<size_t>(n - 1));
  ASSERT_EQ(z.heights.size(), heights.size());
  ASSERT_EQ(z.sizes.size(), static_cast<size_t>(n - 1));
  for (size_t i = 0; i < heights.size(); ++i) EXPECT_NEAR(z.heights[i], heights[i], tol) << "merge " << i;
  for (size_t i = 1; i < z.heights.size(); ++i) EXPECT_LE(z.heights[i - 1], z.heights[i]) << "merge " << i;
  if (n > 1) EXPECT_EQ(z.sizes.back(), n);
  EXPECT_EQ(cut_tree(z, n, r), labels);
  EXPECT_EQ(hierarchical_clusters(X, n, d, r, m), labels);
}

}  // namespace

TEST(HClust, LinkageNames) {
  for (Linkage m : kAll) EXPECT_EQ(parse_linkage(to_string(m)), m);
  EXPECT_STREQ(to_string(Linkage::Ward), "ward");
  const std::string err = error_of([] { parse_linkage("median"); });
  EXPECT_NE(err.find("median"), std::string::npos) << err;
  EXPECT_NE(err.find("average | single | complete | ward"), std::string::npos) << err;
}

// tests/data/golden/hclust.json: shared/data/golden/hclust.json (SciPy 1.10.1) with each
// distinct X stored once (tests/data/golden/README.md).
TEST(HClust, GoldenScipyCases) {
  const json g = read_json_file(std::string(MOEFORGE_TEST_DATA) + "/golden/hclust.json");
  const json& inputs = g.at("inputs");
  ASSERT_EQ(g.at("cases").size(), 32u);
  std::set<std::string> seen;
  for (const json& c : g.at("cases")) {
    const json& in = inputs.at(c.at("input").get<size_t>());
    const int64_t n = in.at("n").get<int64_t>(), d = in.at("d").get<int64_t>(), r = c.at("r").get<int64_t>();
    const Linkage m = parse_linkage(c.at("linkage").get<std::string>());
    ASSERT_EQ(c.at("metric").get<std::string>(), "euclidean");
    seen.insert(to_string(m));
    SCOPED_TRACE(cat(to_string(m), " n=", n, " d=", d, " r=", r));
    expect_scipy_case(rows_of(in.at("X")), n, d, r, m, c.at("labels").get<std::vector<int64_t>>(),
                      c.at("merge_heights").get<std::vector<double>>(), kGoldenTol);
  }
  EXPECT_EQ(seen.size(), 4u);
}

// The original file, where the project's shared/ sits beside the checkout (developers, CI).
TEST(HClust, GoldenScipyCasesSharedOriginal) {
  const std::string path = std::string(MOEFORGE_SOURCE_DIR) + "/../shared/data/golden/hclust.json";
  if (!path_exists(path)) GTEST_SKIP() << path << " absent";
  const json g = read_json_file(path);
  ASSERT_FALSE(g.at("cases").empty());
  for (const json& c : g.at("cases")) {
    const int64_t n = c.at("n").get<int64_t>(), d = c.at("d").get<int64_t>(), r = c.at("r").get<int64_t>();
    const Linkage m = parse_linkage(c.at("linkage").get<std::string>());
    SCOPED_TRACE(cat(to_string(m), " n=", n, " d=", d, " r=", r));
    expect_scipy_case(rows_of(c.at("X")), n, d, r, m, c.at("labels").get<std::vector<int64_t>>(),
                      c.at("merge_heights").get<std::vector<double>>(), kGoldenTol);
  }
}

// Points 0, 1, 3, 7 on a line. Pairwise: d01 1, d12 2, d02 3, d23 4, d13 6, d03 7.
// Every linkage merges {0,1}, then {0,1}+2, then 3:
//   single   1, min(3,2) = 2, min(7,6,4) = 4
//   complete 1, max(3,2) = 3, max(7,6,4) = 7
//   average  1, (3+2)/2 = 2.5, (7+6+4)/3 = 17/3
//   ward     1, sqrt(2·2·1/3)·|0.5−3| = 5/sqrt(3), sqrt(2·3·1/4)·|4/3−7| = sqrt(1.5)·17/3
TEST(HClust, HandDerivedLine) {
  const std::vector<double> X{0, 1, 3, 7};
  const std::vector<std::pair<Linkage, std::vector<double>>> expected{
      {Linkage::Single, {1, 2, 4}},
      {Linkage::Complete, {1, 3, 7}},
      {Linkage::Average, {1, 2.5, 17.0 / 3.0}},
      {Linkage::Ward, {1, 5.0 / std::sqrt(3.0), std::sqrt(1.5) * 17.0 / 3.0}},
  };
  for (const auto& [m, h] : expected) {
    SCOPED_TRACE(to_string(m));
    const Dendrogram z = linkage(X, 4, 1, m);
    ASSERT_EQ(z.heights.size(), 3u);
    for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(z.heights[i], h[i], 1e-12) << "merge " << i;
    EXPECT_EQ(z.merged, (std::vector<std::array<int64_t, 2>>{{0, 1}, {2, 4}, {3, 5}}));
    EXPECT_EQ(z.sizes, (std::vector<int64_t>{2, 3, 4}));
    EXPECT_EQ(cut_tree(z, 4, 4), (std::vector<int64_t>{0, 1, 2, 3}));
    EXPECT_EQ(cut_tree(z, 4, 3), (std::vector<int64_t>{0, 0, 1, 2}));
    EXPECT_EQ(cut_tree(z, 4, 2), (std::vector<int64_t>{0, 0, 0, 1}));
    EXPECT_EQ(cut_tree(z, 4, 1), (std::vector<int64_t>{0, 0, 0, 0}));
  }
}

// Equal distances: which merge comes first decides the labels of a cut through a tie. Expected
// values from SciPy 1.10.1 (linkage + cut_tree, r = 1..n), which this code follows step by step
// (nearest-neighbour chain / minimum spanning tree, stable sort, relabel, cut_tree's order).
TEST(HClust, TiesResolveAsScipy) {
  struct Case {
    Linkage m;
    std::vector<std::array<int64_t, 2>> merged;
    std::vector<double> heights;
    std::vector<std::vector<int64_t>> labels;  // r = 1..n
  };
  {
    // A 2×2 unit square plus three points of a second group: five merges at height 1.
    const std::vector<double> X{0, 0, 1, 0, 0, 1, 1, 1, 3, 0, 4, 0, 3, 1};
    const std::vector<std::vector<int64_t>> avg_labels{{0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 1, 1, 1},
                                                       {0, 0, 0, 0, 1, 1, 2}, {0, 0, 1, 1, 2, 2, 3},
                                                       {0, 0, 1, 1, 2, 3, 4}, {0, 0, 1, 2, 3, 4, 5},
                                                       {0, 1, 2, 3, 4, 5, 6}};
    const std::vector<Case> cases{
        {Linkage::Average,
         {{0, 1}, {2, 3}, {4, 5}, {7, 8}, {6, 9}, {10, 11}},
         {1, 1, 1, 1.2071067811865475, 1.2071067811865475, 2.9235062134268652},
         avg_labels},
        {Linkage::Complete,
         {{0, 1}, {2, 3}, {4, 5}, {7, 8}, {6, 9}, {10, 11}},
         {1, 1, 1, 1.4142135623730951, 1.4142135623730951, 4.123105625617661},
         avg_labels},
        {Linkage::Single,
         {{0, 1}, {2, 7}, {3, 8}, {4, 5}, {6, 10}, {9, 11}},
         {1, 1, 1, 1, 1, 2},
         {{0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 1, 1, 1}, {0, 0, 0, 0, 1, 1, 2}, {0, 0, 0, 1, 2, 2, 3},
          {0, 0, 0, 1, 2, 3, 4}, {0, 0, 1, 2, 3, 4, 5}, {0, 1, 2, 3, 4, 5, 6}}},
        {Linkage::Ward,
         {{0, 1}, {2, 3}, {4, 5}, {6, 9}, {7, 8}, {10, 11}},
         {1, 1, 1, 1.2909944487358056, 1.4142135623730951, 5.255382728122436},
         {{0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 1, 1, 1}, {0, 0, 1, 1, 2, 2, 2}, {0, 0, 1, 1, 2, 2, 3},
          {0, 0, 1, 2, 3, 3, 4}, {0, 1, 2, 3, 4, 4, 5}, {0, 1, 2, 3, 4, 5, 6}}},
    };
    for (const Case& c : cases) {
      SCOPED_TRACE(cat("grid ", to_string(c.m)));
      const Dendrogram z = linkage(X, 7, 2, c.m);
      EXPECT_EQ(z.merged, c.merged);
      ASSERT_EQ(z.heights.size(), c.heights.size());
      for (size_t i = 0; i < c.heights.size(); ++i) EXPECT_NEAR(z.heights[i], c.heights[i], 1e-12) << "merge " << i;
      for (int64_t r = 1; r <= 7; ++r) EXPECT_EQ(cut_tree(z, 7, r), c.labels[r - 1]) << "r=" << r;
    }
  }
  {
    // Exact copies (an upcycled model before training): two experts, three copies each, interleaved.
    const std::vector<double> X{0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1};
    const std::vector<std::vector<int64_t>> labels{{0, 0, 0, 0, 0, 0}, {0, 1, 0, 1, 0, 1}, {0, 1, 0, 1, 0, 2},
                                                   {0, 1, 0, 1, 2, 3}, {0, 1, 0, 2, 3, 4}, {0, 1, 2, 3, 4, 5}};
    for (Linkage m : kAll) {
      SCOPED_TRACE(cat("copies ", to_string(m)));
      const Dendrogram z = linkage(X, 6, 2, m);
      EXPECT_EQ(z.merged, m == Linkage::Single
                              ? (std::vector<std::array<int64_t, 2>>{{0, 2}, {4, 6}, {1, 3}, {5, 8}, {7, 9}})
                              : (std::vector<std::array<int64_t, 2>>{{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 9}}));
      ASSERT_EQ(z.heights.size(), 5u);
      for (size_t i = 0; i < 4; ++i) EXPECT_EQ(z.heights[i], 0.0);
      EXPECT_NEAR(z.heights[4], m == Linkage::Ward ? std::sqrt(6.0) : std::sqrt(2.0), 1e-12);
      for (int64_t r = 1; r <= 6; ++r) EXPECT_EQ(cut_tree(z, 6, r), labels[r - 1]) << "r=" << r;
    }
  }
  {
    // Five identical points: every distance 0.
    const std::vector<double> X{2, -1, 2, -1, 2, -1, 2, -1, 2, -1};
    const std::vector<std::vector<int64_t>> labels{
        {0, 0, 0, 0, 0}, {0, 0, 0, 0, 1}, {0, 0, 0, 1, 2}, {0, 0, 1, 2, 3}, {0, 1, 2, 3, 4}};
    for (Linkage m : kAll) {
      SCOPED_TRACE(cat("identical ", to_string(m)));
      const Dendrogram z = linkage(X, 5, 2, m);
      EXPECT_EQ(z.merged, (std::vector<std::array<int64_t, 2>>{{0, 1}, {2, 5}, {3, 6}, {4, 7}}));
      EXPECT_EQ(z.heights, (std::vector<double>{0, 0, 0, 0}));
      for (int64_t r = 1; r <= 5; ++r) EXPECT_EQ(cut_tree(z, 5, r), labels[r - 1]) << "r=" << r;
    }
  }
}

TEST(HClust, CutExtremesAndOnePoint) {
  const json g = read_json_file(std::string(MOEFORGE_TEST_DATA) + "/golden/hclust.json");
  const json& in = g.at("inputs").at(1);
  const int64_t n = in.at("n").get<int64_t>(), d = in.at("d").get<int64_t>();
  const std::vector<double> X = rows_of(in.at("X"));
  for (Linkage m : kAll) {
    SCOPED_TRACE(to_string(m));
    const Dendrogram z = linkage(X, n, d, m);
    EXPECT_EQ(cut_tree(z, n, n), identity(n));
    EXPECT_EQ(cut_tree(z, n, 1), std::vector<int64_t>(static_cast<size_t>(n), 0));
    for (int64_t r = 1; r <= n; r += 7) {
      const std::vector<int64_t> labels = cut_tree(z, n, r);
      EXPECT_EQ(cluster_members(labels).size(), static_cast<size_t>(r));
    }
  }
  // One expert: no merge, one cluster.
  const Dendrogram one = linkage({1.5, -2.0}, 1, 2, Linkage::Average);
  EXPECT_TRUE(one.merged.empty());
  EXPECT_EQ(cut_tree(one, 1, 1), (std::vector<int64_t>{0}));
  EXPECT_EQ(hierarchical_clusters({1.5, -2.0}, 1, 2, 1, Linkage::Ward), (std::vector<int64_t>{0}));
}

TEST(HClust, DistanceMatrixEntryPoint) {
  const std::vector<double> X{0, 0, 3, 4, 6, 8, 1, 1};
  const std::vector<double> D = pairwise_distances(X, 4, 2);
  ASSERT_EQ(D.size(), 16u);
  EXPECT_EQ(D[0 * 4 + 1], 5.0);
  EXPECT_EQ(D[1 * 4 + 0], 5.0);
  EXPECT_EQ(D[0 * 4 + 2], 10.0);
  EXPECT_EQ(D[2 * 4 + 2], 0.0);
  for (Linkage m : kAll) {
    const Dendrogram a = linkage(X, 4, 2, m), b = linkage_from_distances(D, 4, m);
    EXPECT_EQ(a.merged, b.merged) << to_string(m);
    EXPECT_EQ(a.heights, b.heights) << to_string(m);
  }
}

TEST(HClust, Representative) {
  // Line 0, 1, 3, 7 in clusters {0,1,2}, {3}: the mean 4/3 is nearest to point 1.
  const std::vector<double> line{0, 1, 3, 7};
  const std::vector<int64_t> labels{0, 0, 0, 1};
  EXPECT_EQ(representative(line, 4, 1, labels, 0), 1);
  EXPECT_EQ(representative(line, 4, 1, labels, 1), 3);
  EXPECT_EQ(representatives(line, 4, 1, labels), (std::vector<int64_t>{1, 3}));
  // Two members equally far from their mean: the lower index.
  EXPECT_EQ(representative({0, 2, 5}, 3, 1, {0, 0, 1}, 0), 0);
  EXPECT_EQ(representative({5, 0, 2}, 3, 1, {1, 0, 0}, 0), 1);
  // 2-D: mean of (0,0), (4,0), (1,1) is (5/3, 1/3); (1,1) is nearest.
  EXPECT_EQ(representative({0, 0, 4, 0, 1, 1}, 3, 2, {0, 0, 0}, 0), 2);
  EXPECT_THROW(representative(line, 4, 1, labels, 2), Error);
  EXPECT_THROW(representative(line, 4, 1, {0, 0, 1}, 0), Error);
  EXPECT_THROW(cluster_members({0, -1}), Error);
  EXPECT_EQ(cluster_members({1, 0, 1}), (std::vector<std::vector<int64_t>>{{1}, {0, 2}}));
}

TEST(HClust, BadInputThrows) {
  const std::vector<double> X{0, 1, 3, 7};
  for (int64_t r : {int64_t{0}, int64_t{-1}, int64_t{5}}) {
    const std::string err = error_of([&] { hierarchical_clusters(X, 4, 1, r, Linkage::Average); });
    EXPECT_NE(err.find("1 <= r <= 4"), std::string::npos) << "r=" << r << ": " << err;
  }
  const Dendrogram z = linkage(X, 4, 1, Linkage::Average);
  EXPECT_THROW(cut_tree(z, 4, 0), Error);
  EXPECT_THROW(cut_tree(z, 4, 5), Error);
  EXPECT_THROW(cut_tree(z, 5, 2), Error);  // dendrogram of another n
  EXPECT_THROW(cut_tree(z, 0, 1), Error);
  Dendrogram broken = z;
  broken.merged[0] = {0, 5};  // refers to a cluster formed later
  EXPECT_THROW(cut_tree(broken, 4, 2), Error);
  broken = z;
  broken.merged[1] = {0, 2};  // point 0 merged twice
  EXPECT_THROW(cut_tree(broken, 4, 2), Error);

  EXPECT_THROW(linkage({}, 0, 1, Linkage::Average), Error);                       // empty
  EXPECT_THROW(hierarchical_clusters({}, 0, 4, 1, Linkage::Single), Error);       // empty
  EXPECT_THROW(linkage({0, 1, 3}, 4, 1, Linkage::Average), Error);                // size mismatch
  EXPECT_THROW(linkage({0, 1, 3, 7}, 2, 0, Linkage::Average), Error);             // d = 0
  EXPECT_THROW(linkage({0, std::nan(""), 3, 7}, 4, 1, Linkage::Ward), Error);     // NaN
  EXPECT_THROW(linkage({0, 1, std::numeric_limits<double>::infinity(), 7}, 4, 1, Linkage::Complete), Error);
  EXPECT_THROW(linkage_from_distances({0, -1, -1, 0}, 2, Linkage::Average), Error);  // negative distance
  EXPECT_THROW(linkage_from_distances({0, 1, 1}, 2, Linkage::Average), Error);       // not n×n
}

namespace {

// Three blobs of five points in R^4 (centres 0, 10·e1, 10·e2; offsets ≤ 0.2), interleaved.
struct Blobs {
  std::vector<double> X;
  std::vector<int64_t> truth;  // blob of each point, numbered by lowest member
};

Blobs blobs() {
  const double centre[3][4] = {{0, 0, 0, 0}, {10, 0, 0, 0}, {0, 10, 0, 0}};
  const double offset[5][4] = {{0.1, -0.2, 0.05, 0},
                               {-0.15, 0.1, 0, 0.2},
                               {0.2, 0.1, -0.1, -0.1},
                               {-0.05, -0.1, 0.15, 0.05},
                               {0, 0.2, -0.05, -0.15}};
  const int blob_of[15] = {0, 1, 2, 1, 0, 2, 2, 0, 1, 1, 2, 0, 0, 1, 2};
  Blobs b;
  int used[3] = {0, 0, 0};
  for (int p = 0; p < 15; ++p) {
    const int k = blob_of[p];
    for (int c = 0; c < 4; ++c) b.X.push_back(centre[k][c] + offset[used[k]][c]);
    ++used[k];
    b.truth.push_back(k);  // blobs 0, 1, 2 first appear at points 0, 1, 2
  }
  return b;
}

}  // namespace

TEST(KMeans, FindsSeparatedBlobs) {
  const Blobs b = blobs();
  for (uint64_t seed = 0; seed < 20; ++seed) {
    KMeansOptions o;
    o.seed = seed;
    const KMeansResult res = kmeans(b.X, 15, 4, 3, o);
    EXPECT_EQ(res.labels, b.truth) << "seed " << seed;
    // Each blob's member nearest its mean has offset 3, i.e. the 4th point of the blob.
    EXPECT_EQ(res.dominant, (std::vector<int64_t>{11, 9, 10})) << "seed " << seed;
    EXPECT_TRUE(res.converged) << "seed " << seed;
    EXPECT_EQ(res.reseeded, 0) << "seed " << seed;
    ASSERT_EQ(res.centers.size(), 12u);
    EXPECT_NEAR(res.centers[1 * 4 + 0], 10.0 + 0.02, 1e-12);  // blob 1's mean, first coordinate
    ASSERT_EQ(res.initial.size(), 3u);
  }
  // The documented draw (std::mt19937_64, 53-bit uniforms, cumulative walk) for seed 0.
  EXPECT_EQ(kmeans(b.X, 15, 4, 3).initial, (std::vector<int64_t>{2, 13, 0}));
  // Same seed, same result.
  KMeansOptions o;
  o.seed = 7;
  EXPECT_EQ(kmeans(b.X, 15, 4, 3, o).initial, kmeans(b.X, 15, 4, 3, o).initial);
}

TEST(KMeans, ExplicitInitAndSeveralFeatureSets) {
  const Blobs b = blobs();
  KMeansOptions o;
  o.init = {0, 1, 2};
  const KMeansResult res = kmeans(b.X, 15, 4, 3, o);
  EXPECT_EQ(res.initial, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(res.labels, b.truth);
  // A second feature set (the same points scaled by 100, two extra dimensions), averaged in.
  std::vector<double> Y;
  for (int64_t i = 0; i < 15; ++i) {
    for (int64_t c = 0; c < 4; ++c) Y.push_back(100.0 * b.X[i * 4 + c]);
    Y.push_back(0.0);
    Y.push_back(1.0);
  }
  const std::vector<KMeansFeatures> features{{&b.X, 4, 1.0}, {&Y, 6, 1.0}};
  const KMeansResult two = kmeans(features, 15, 3);
  EXPECT_EQ(two.labels, b.truth);
  EXPECT_EQ(two.dominant, (std::vector<int64_t>{11, 9, 10}));
}

TEST(KMeans, EmptyClustersAreReseeded) {
  // All points identical: every centre coincides, the reference would produce NaN centres.
  const std::vector<double> X{1, 2, 1, 2, 1, 2, 1, 2, 1, 2};
  const KMeansResult res = kmeans(X, 5, 2, 3);
  EXPECT_EQ(res.labels, (std::vector<int64_t>{0, 1, 2, 2, 2}));
  EXPECT_GT(res.reseeded, 0);
  for (double v : res.centers) EXPECT_TRUE(std::isfinite(v));
  ASSERT_EQ(res.dominant.size(), 3u);
  for (size_t k = 0; k < 3; ++k) EXPECT_EQ(res.labels[res.dominant[k]], static_cast<int64_t>(k));
  // k = n: every point its own cluster.
  const Blobs b = blobs();
  const KMeansResult all = kmeans(b.X, 15, 4, 15);
  EXPECT_EQ(all.labels, identity(15));
  EXPECT_EQ(all.dominant, identity(15));
  // k = 1: one cluster.
  EXPECT_EQ(kmeans(b.X, 15, 4, 1).labels, std::vector<int64_t>(15, 0));
}

TEST(KMeans, BadInputThrows) {
  const Blobs b = blobs();
  EXPECT_THROW(kmeans(b.X, 15, 4, 0), Error);
  EXPECT_THROW(kmeans(b.X, 15, 4, 16), Error);
  EXPECT_THROW(kmeans(std::vector<double>{}, 0, 4, 1), Error);
  EXPECT_THROW(kmeans(b.X, 14, 4, 3), Error);  // size mismatch
  KMeansOptions o;
  o.init = {0, 1};
  EXPECT_THROW(kmeans(b.X, 15, 4, 3, o), Error);
  o.init = {0, 1, 15};
  EXPECT_THROW(kmeans(b.X, 15, 4, 3, o), Error);
  o.init.clear();
  o.max_iter = 0;
  EXPECT_THROW(kmeans(b.X, 15, 4, 3, o), Error);
  const std::vector<KMeansFeatures> none{{nullptr, 4, 1.0}};
  EXPECT_THROW(kmeans(none, 15, 3), Error);
  std::vector<double> bad = b.X;
  bad[7] = std::nan("");
  EXPECT_THROW(kmeans(bad, 15, 4, 3), Error);
}
