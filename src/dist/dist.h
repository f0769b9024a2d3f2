// torch.distributed (c10d) process groups configured by torchrun's environment, for data
// parallel training and expert-parallel all-to-all (docs: ../shared/design.md, "Beyond one
// machine"). One Group = a Gloo process group (CPU tensors; other devices are staged through host
// memory) plus the TCPStore rendezvous it was built on. Rank 0 serves the store at
// MASTER_ADDR:MASTER_PORT; the other ranks connect to it.
//
// Every collective must be called by every rank, in the same order, with matching arguments (the
// same tensor list and shapes for the reductions and broadcasts, consistent split sizes for the
// all-to-all). A collective that fails because a peer died or stopped answering within the
// timeout throws ONE mf::Error line:
//   rank <r>: lost contact with the other ranks during <op> (<cause>); the run stops
// A Group of one process (world_size 1) opens no socket and its collectives are local identities,
// so callers need no special case for single-process runs.
#pragma once
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mf::dist {

// What one kind of collective cost this rank so far: calls, payload bytes this rank sent (an
// all-reduce counts its tensors' bytes; an all-to-all the rows for other ranks; a broadcast its
// tensor on the root), and wall seconds inside the calls (staging copies included).
struct CommStats {
  int64_t calls = 0, bytes = 0;
  double seconds = 0.0;
};

// The process's place in the job, as torchrun (or `moeforge launch`) describes it.
struct DistEnv {
  int64_t rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool active() const { return world_size > 1; }
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (and checks LOCAL_RANK against
// LOCAL_WORLD_SIZE when that is set). Without WORLD_SIZE the process is a single rank and the
// other variables are not looked at. LOCAL_RANK defaults to RANK (right for one machine), the
// master to 127.0.0.1:29500. Malformed or inconsistent values throw one line
// `torchrun environment: <what>`.
DistEnv env_from_torchrun();
// An environment variable; empty counts as unset (`WORLD_SIZE= moeforge ...`).
std::optional<std::string> env_var(const char* name);

// MOEFORGE_DIST_TIMEOUT (seconds, a positive number, fractions allowed) or 300 s. This bounds the
// rendezvous and every collective: a rank that does not answer for that long is taken for dead.
std::chrono::milliseconds default_timeout();

// A TCP port that was free a moment ago (bound to port 0 on all interfaces, then closed): for
// `moeforge launch --master-port 0` and tests. Another process may take it in between.
int free_port();

class Group {
 public:
  // Use init(); a null process group means a single-process group.
  Group(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::ProcessGroup> pg, int64_t rank,
        int64_t world_size);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  // A group of some of this group's ranks (`ranks`: increasing ranks of this group), as
  // torch.distributed.new_group: every member calls it with the same ranks and a `name` unique in
  // the job (its store keys); non-members may skip it and get nullptr. Its rank() and
  // world_size() are within the subgroup; its errors name the job rank.
  std::shared_ptr<Group> subgroup(const std::vector<int64_t>& ranks, const std::string& name);

  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }
  bool active() const { return world_size_ > 1; }

  // Element-wise sum over the ranks, in place, one allreduce per tensor (all issued, then all
  // awaited). Undefined and empty tensors are skipped. bfloat16/half are summed in float32,
  // bool/int16 in int32, then written back in their own dtype.
  void all_reduce_sum(std::vector<at::Tensor>& tensors);

  // What DDP does with gradients: the tensors are grouped by dtype (and device) in list order,
  // packed into flat buckets of at most `bucket_bytes` (a larger tensor gets a bucket of its own),
  // each bucket is summed with one allreduce, divided by the world size and copied back into the
  // tensors (in place; they may be non-contiguous or on another device). Undefined and empty
  // tensors are skipped; every rank must pass the same list (same order, shapes, dtypes).
  // Floating-point tensors only; bfloat16/half buckets are reduced in float32.
  void all_reduce_mean_bucketed(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes = 25 << 20);

  // Copies `t` of rank `root` into `t` of every other rank (same shape and dtype everywhere; any
  // dtype, moved as raw bits).
  void broadcast(at::Tensor& t, int64_t root = 0);

  void barrier();

  // Every rank's byte string, by rank (any bytes, any lengths, empty ones included).
  std::vector<std::string> all_gather_strings(const std::string& mine);

  // MPI_Alltoallv along dim 0, as torch.distributed.all_to_all_single: this rank sends rows
  // [sum(input_split_sizes[0..j)), +input_split_sizes[j]) of `input` to rank j and receives
  // output_split_sizes[i] rows from rank i, stacked in rank order. The rows' trailing shape and
  // dtype must be the same on every rank, and input_split_sizes[j] on rank i must equal
  // output_split_sizes[i] on rank j. Zero-row pieces are allowed. The result has the input's
  // dtype and device.
  at::Tensor all_to_all_single(const at::Tensor& input, const std::vector<int64_t>& input_split_sizes,
                               const std::vector<int64_t>& output_split_sizes);

  // Communication so far, by operation ("all_reduce", "all_to_all", "broadcast", "all_gather",
  // "barrier"); empty for a single-process group.
  const std::map<std::string, CommStats>& comm_stats() const { return stats_; }

  // The underlying c10d objects (null for a single-process group), for collectives not wrapped
  // here. Errors from them are not translated.
  const c10::intrusive_ptr<c10d::ProcessGroup>& process_group() const { return pg_; }
  const c10::intrusive_ptr<c10d::Store>& store() const { return store_; }

  // Synchronizes the ranks (best effort) and releases the process group and the store. shutdown()
  // calls this; the destructor only releases.
  void close();

 private:
  // Waits for `work`; any failure becomes the one-line "lost contact" mf::Error.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* op) const;
  [[noreturn]] void lost_contact(const char* op, const std::string& cause) const;

  friend std::shared_ptr<Group> init(const DistEnv& env, std::chrono::milliseconds timeout);

  // Adds one call of `op` that started at `t0` and moved `bytes` to the statistics.
  void record(const char* op, int64_t bytes, std::chrono::steady_clock::time_point t0);

  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
  int64_t rank_ = 0, world_size_ = 1;
  int64_t job_rank_ = 0;                                                 // this process in the whole job (messages)
  c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> gloo_options_;  // transport and timeout, for subgroups
  std::string prefix_;                                                   // store key prefix of this group
  std::map<std::string, CommStats> stats_;
};

// Joins the job: TCPStore rendezvous at master_addr:master_port (rank 0 listens and waits for
// all world_size ranks), then a Gloo process group whose operations time out after `timeout`.
// The Gloo transport binds GLOO_SOCKET_IFNAME's interfaces when set (as PyTorch does), the
// loopback address when the master is a loopback address, and otherwise the address this
// machine's hostname resolves to. Sets SIGPIPE to ignored (as the Python interpreter does), so a
// peer that dies mid-write is an error, not a silent exit. A rendezvous that fails throws one line
//   rank <r>: could not reach the other ranks during rendezvous at <addr>:<port> (<cause>); the run stops
// For world_size 1 nothing is opened and a single-process Group is returned.
std::shared_ptr<Group> init(const DistEnv& env, std::chrono::milliseconds timeout = default_timeout());

// Clean teardown at the normal end of a run, called by every rank: a barrier (so that no rank
// closes its connections while another still reads from them), then the group and store are
// released and `group` is reset. Never throws. On error paths just drop the pointer instead:
// a rank that leaves early must not enter a barrier its peers never reach.
void shutdown(std::shared_ptr<Group>& group);

}  // namespace mf::dist
