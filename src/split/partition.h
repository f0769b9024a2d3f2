// Partition of one FFN layer's neurons into experts. Covers may be equal, unequal, overlapping
// (MoEBERT's shared neurons) or incomplete (MoEBERT's dropped neurons); validate() says which.
// On disk: the reference repos' `{layer}.part.{N}` text file, one line per neuron in index order:
// an expert id, a comma-separated list of ids (neuron shared by several experts), or an empty
// line (neuron dropped).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mf {

struct Partition {
  int64_t num_neurons = 0;                     // F
  std::vector<std::vector<int32_t>> experts;   // experts[j] = sorted neuron ids of expert j

  int num_experts() const { return static_cast<int>(experts.size()); }
  std::vector<int64_t> sizes() const;
  // Builds a true partition from a label per neuron (label in [0, num_experts)).
  static Partition from_labels(const std::vector<int32_t>& labels, int num_experts);
  // Label per neuron; throws mf::Error unless this is a true partition.
  std::vector<int32_t> labels() const;
};

struct CoverStats {
  int64_t dropped = 0;     // neurons in no expert
  int64_t shared = 0;      // neurons in more than one expert
  int64_t max_multiplicity = 0;
  int64_t min_size = 0, max_size = 0;
  bool is_partition() const { return dropped == 0 && shared == 0; }
};

// Counts drops and overlaps; throws mf::Error for ids out of [0, F) or duplicates inside one expert.
CoverStats validate(const Partition& p);

// `{layer}.part.{N}` naming, e.g. part_file_name(3, 8) == "3.part.8".
std::string part_file_name(int layer, int num_experts);

// Parses a .part file. `num_experts` = N from the file name (ids must lie in [0, N)); pass 0 to
// take N = max id + 1. `num_neurons` = expected line count, or 0 to accept any.
// Errors: mf::Error "<file>:<line>: <what>".
Partition read_part_file(const std::string& path, int num_experts = 0, int64_t num_neurons = 0);
Partition parse_part_text(const std::string& text, const std::string& origin, int num_experts = 0,
                          int64_t num_neurons = 0);
std::string format_part_text(const Partition& p);
void write_part_file(const std::string& path, const Partition& p);  // atomic

}  // namespace mf
