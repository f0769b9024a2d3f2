// Partition type, cover validation and the `{layer}.part.{N}` text format.
#include <gtest/gtest.h>

#include <functional>

#include "split/partition.h"
#include "util/error.h"
#include "util/fs.h"
#include "test_helpers.h"

using namespace mf;
using mf::testing_helpers::error_of;

TEST(SplitPartition, HandWrittenFileWithSharedAndDropped) {
  // 6 neurons, N=3: neuron 1 shared by experts 1 and 2, neurons 2 and 5 dropped.
  std::string dir = testing::TempDir() + "/mf_part";
  make_dirs(dir);
  std::string path = dir + "/" + part_file_name(3, 3);
  EXPECT_EQ(base_name(path), "3.part.3");
  write_file_atomic(path, "0\n1,2\n\n2\n0\n\n");
  Partition p = read_part_file(path, 3, 6);
  ASSERT_EQ(p.num_experts(), 3);
  EXPECT_EQ(p.num_neurons, 6);
  EXPECT_EQ(p.experts[0], (std::vector<int32_t>{0, 4}));
  EXPECT_EQ(p.experts[1], (std::vector<int32_t>{1}));
  EXPECT_EQ(p.experts[2], (std::vector<int32_t>{1, 3}));
  CoverStats st = validate(p);
  EXPECT_EQ(st.dropped, 2);
  EXPECT_EQ(st.shared, 1);
  EXPECT_EQ(st.max_multiplicity, 2);
  EXPECT_FALSE(st.is_partition());
  EXPECT_THROW(p.labels(), Error);
  // Writing gives back the same bytes.
  EXPECT_EQ(format_part_text(p), "0\n1,2\n\n2\n0\n\n");
}

TEST(SplitPartition, RoundTripTruePartition) {
  std::vector<int32_t> labels = {3, 0, 1, 2, 2, 0, 1, 3, 3, 0};
  Partition p = Partition::from_labels(labels, 4);
  EXPECT_TRUE(validate(p).is_partition());
  EXPECT_EQ(p.sizes(), (std::vector<int64_t>{3, 2, 2, 3}));
  std::string path = testing::TempDir() + "/7.part.4";
  write_part_file(path, p);
  EXPECT_EQ(read_file(path), "3\n0\n1\n2\n2\n0\n1\n3\n3\n0\n");
  Partition q = read_part_file(path, 4, 10);
  EXPECT_EQ(q.experts, p.experts);
  EXPECT_EQ(q.labels(), labels);
}

TEST(SplitPartition, CrlfAndNoTrailingNewline) {
  Partition p = parse_part_text("1\r\n0\r\n1", "x.part.2", 2);
  EXPECT_EQ(p.num_neurons, 3);
  EXPECT_EQ(p.experts[1], (std::vector<int32_t>{0, 2}));
}

TEST(SplitPartition, MalformedFilesNameFileAndLine) {
  std::string e = error_of([] { parse_part_text("0\n1\nx\n", "a/0.part.2", 2); });
  EXPECT_EQ(e.rfind("a/0.part.2:3: ", 0), 0u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  e = error_of([] { parse_part_text("0\n5\n", "b.part.2", 2); });
  EXPECT_EQ(e.rfind("b.part.2:2: ", 0), 0u) << e;
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;
  e = error_of([] { parse_part_text("1,1\n", "c.part.2", 2); });
  EXPECT_EQ(e.rfind("c.part.2:1: ", 0), 0u) << e;
  e = error_of([] { parse_part_text("0,\n", "d.part.2", 2); });
  EXPECT_EQ(e.rfind("d.part.2:1: ", 0), 0u) << e;
  e = error_of([] { parse_part_text("-1\n", "e.part.2", 2); });
  EXPECT_EQ(e.rfind("e.part.2:1: ", 0), 0u) << e;
  e = error_of([] { parse_part_text("0\n1\n", "f.part.2", 2, 3); });
  EXPECT_NE(e.find("expected 3"), std::string::npos) << e;
  e = error_of([] { read_part_file("/nonexistent/0.part.8"); });
  EXPECT_NE(e.find("/nonexistent/0.part.8"), std::string::npos) << e;
}

TEST(SplitPartition, ValidateRejectsBadIds) {
  Partition p;
  p.num_neurons = 3;
  p.experts = {{0, 1}, {2, 3}};
  EXPECT_THROW(validate(p), Error);
  p.experts = {{0, 0}, {1, 2}};
  EXPECT_THROW(validate(p), Error);
}
