// Calibration passes shared out over the ranks of a data-parallel job (torchrun or `moeforge
// launch`; docs/distributed.md, "Data-parallel profile and merge calibration"). Batch j of a pass
// is run by rank j mod W, exactly as one process runs it; what the batches accumulate (sums and
// counts) is then summed over the ranks before anything is normalised, so every rank ends with
// one process's statistics up to the summation order of those sums. Rank 0 writes the outputs.
// A default-constructed BatchSharding is one process: every batch is its own, sums are identities.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace mf {

namespace dist {
class Group;
}

class BatchSharding {
 public:
  BatchSharding() = default;
  // A null or single-process group is one process.
  explicit BatchSharding(std::shared_ptr<dist::Group> group);

  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }
  bool active() const { return world_size_ > 1; }
  // The rank that writes the outputs and prints.
  bool writer() const { return rank_ == 0; }
  // Whether batch `index` (0-based, in the pass's one-process order) is run by this rank.
  bool owns(int64_t index) const { return index % world_size_ == rank_; }

  // Element-wise sums over the ranks, in place: pass the accumulators themselves (the handles
  // share their storage). Every rank passes the same list (order, shapes, dtypes); undefined
  // and empty tensors are skipped.
  void sum(const std::vector<at::Tensor>& tensors) const;
  // The sum of `value` over the ranks.
  int64_t sum(int64_t value) const;

  // The pass's collectives are over: a barrier, then the connections are released
  // (dist::Group::close; a later dist::shutdown of the group does nothing more). Called by every
  // rank once the statistics are summed, so that the other ranks do not wait for rank 0's
  // writing (or planning) in a barrier that has a timeout.
  void finish() const;

 private:
  std::shared_ptr<dist::Group> group_;
  int64_t rank_ = 0, world_size_ = 1;
};

}  // namespace mf
