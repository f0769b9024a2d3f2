#include "dist/dist.h"

#include <signal.h>
#include <unistd.h>

// USE_C10D_GLOO comes with the Torch CMake target (TorchConfig's interface definitions), like
// USE_DISTRIBUTED; without it this header is empty.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <utility>

#include "util/error.h"
#include "util/log.h"
#include "util/str.h"

#ifndef USE_C10D_GLOO
#error "moeforge's dist needs libtorch built with Gloo (USE_C10D_GLOO); it comes from the Torch CMake package"
#endif

namespace mf::dist {

namespace {

// ---------------------------------------------------------------- error text

// The first line of an exception message, without Gloo's "[/path/file.cc:123] " prefix.
std::string cause_of(const std::string& message) {
  std::string s = message.substr(0, message.find('\n'));
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find("] ");
    if (close != std::string::npos) {
      const std::string where = s.substr(1, close - 1);
      if (where.find(".cc:") != std::string::npos || where.find(".cpp:") != std::string::npos ||
          where.find(".h:") != std::string::npos)
        s = s.substr(close + 2);
    }
  }
  s = one_line(s);
  return s.empty() ? std::string("no details") : s;
}

std::string current_cause() {
  try {
    throw;
  } catch (const c10::Error& e) {
    return cause_of(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return cause_of(e.what());
  } catch (...) {
    return "unknown error";
  }
}

// Starts a c10d operation. Arguments are checked before, so a synchronous failure here is not a
// user mistake; it is reported with its cause.
template <class F>
c10::intrusive_ptr<c10d::Work> start(int64_t rank, const char* op, F&& f) {
  try {
    return f();
  } catch (...) {
    throw Error(cat("rank ", rank, ": ", op, " could not start (", current_cause(), "); the run stops"));
  }
}

// ---------------------------------------------------------------- tensors on the wire

// Gloo (libtorch 1.13, GENERATE_ALL_TYPES) handles exactly these element types.
bool gloo_native(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
    case at::kDouble:
    case at::kHalf:
    case at::kChar:
    case at::kByte:
    case at::kInt:
    case at::kLong:
      return true;
    default:
      return false;
  }
}

void check_dense(const at::Tensor& t, int64_t rank, const char* op) {
  if (!t.defined()) fail(cat("rank ", rank, ": ", op, ": undefined tensor"));
  if (t.layout() != at::kStrided) fail(cat("rank ", rank, ": ", op, ": only dense (strided) tensors, got ", t.layout()));
  if (c10::isQIntType(t.scalar_type()) || t.is_conj() || t.is_neg())
    fail(cat("rank ", rank, ": ", op, ": ", t.scalar_type(), " tensors are not supported"));
}

// The dtype a sum runs in: bfloat16 and half in float32 (bfloat16 is not among Gloo's types in
// 1.13, and sums of many half values lose too much), bool and int16 in int32.
at::ScalarType reduce_type(at::ScalarType t, int64_t rank, const char* op) {
  switch (t) {
    case at::kBFloat16:
    case at::kHalf:
      return at::kFloat;
    case at::kBool:
    case at::kShort:
      return at::kInt;
    default:
      if (gloo_native(t)) return t;
      fail(cat("rank ", rank, ": ", op, ": ", t, " tensors cannot be summed"));
  }
}

// The dtype raw bits travel as: the tensor's own when Gloo knows it, else one of the same width
// (bfloat16 -> half, bool -> uint8, complex64 -> int64 ...); Gloo only copies them.
at::ScalarType bits_type(at::ScalarType t, int64_t rank, const char* op) {
  if (gloo_native(t)) return t;
  switch (c10::elementSize(t)) {
    case 1:
      return at::kByte;
    case 2:
      return at::kHalf;
    case 4:
      return at::kInt;
    case 8:
      return at::kLong;
    default:
      fail(cat("rank ", rank, ": ", op, ": ", t, " tensors cannot be sent"));
  }
}

// A tensor made ready for Gloo: `host` is CPU, contiguous (`orig` itself when it already is);
// `wire` is what Gloo reads and writes, `host` or a dtype view of it.
struct Staged {
  at::Tensor orig, host, wire;
  bool copied() const { return !host.is_same(orig); }
  // After an operation that wrote `wire`: the result into the caller's tensor.
  void write_back() {
    if (copied()) orig.copy_(host);
  }
};

Staged stage_bits(const at::Tensor& t, int64_t rank, const char* op) {
  Staged s;
  s.orig = t;
  const at::ScalarType bt = bits_type(t.scalar_type(), rank, op);
  s.host = t.device().is_cpu() && t.is_contiguous() ? t : t.to(at::kCPU).contiguous();
  s.wire = bt == t.scalar_type() ? s.host : s.host.view(bt);
  return s;
}

Staged stage_sum(const at::Tensor& t, int64_t rank, const char* op) {
  Staged s;
  s.orig = t;
  const at::ScalarType rt = reduce_type(t.scalar_type(), rank, op);
  if (t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == rt)
    s.host = t;
  else
    s.host = t.to(at::kCPU, rt).contiguous();
  s.wire = s.host;
  return s;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || starts_with(host, "127.") || host == "::1" || host == "[::1]";
}

void ignore_sigpipe() {
  struct sigaction old {};
  if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) ::signal(SIGPIPE, SIG_IGN);
}

}  // namespace

// ---------------------------------------------------------------- Group

Group::Group(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::ProcessGroup> pg, int64_t rank,
             int64_t world_size)
    : store_(std::move(store)), pg_(std::move(pg)), rank_(rank), world_size_(world_size), job_rank_(rank) {}

std::shared_ptr<Group> Group::subgroup(const std::vector<int64_t>& ranks, const std::string& name) {
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i] < 0 || ranks[i] >= world_size_ || (i > 0 && ranks[i] <= ranks[i - 1]))
      fail(cat("rank ", job_rank_, ": subgroup '", name, "': ranks must be increasing and in 0..", world_size_ - 1));
  const auto it = std::find(ranks.begin(), ranks.end(), rank_);
  if (it == ranks.end()) return nullptr;
  const int64_t sub_rank = it - ranks.begin(), size = static_cast<int64_t>(ranks.size());
  std::shared_ptr<Group> g;
  if (!active() || size == 1) {
    g = std::make_shared<Group>(c10::intrusive_ptr<c10d::Store>(), c10::intrusive_ptr<c10d::ProcessGroup>(), 0, 1);
  } else {
    c10::intrusive_ptr<c10d::ProcessGroup> pg;
    try {
      auto prefixed = c10::make_intrusive<c10d::PrefixStore>(prefix_ + "/" + name, store_);
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, static_cast<int>(sub_rank), static_cast<int>(size),
                                                       gloo_options_);
    } catch (...) {
      lost_contact(("setting up subgroup '" + name + "'").c_str(), current_cause());
    }
    g = std::make_shared<Group>(store_, pg, sub_rank, size);
    g->gloo_options_ = gloo_options_;
    g->prefix_ = prefix_ + "/" + name;
  }
  g->job_rank_ = job_rank_;
  return g;
}

Group::~Group() {
  // The process group first: its worker threads finish (or time out) before the store goes.
  pg_.reset();
  store_.reset();
}

void Group::lost_contact(const char* op, const std::string& cause) const {
  throw Error(cat("rank ", job_rank_, ": lost contact with the other ranks during ", op, " (", cause,
                  "); the run stops"));
}

void Group::wait(const c10::intrusive_ptr<c10d::Work>& work, const char* op) const {
  bool done = false;
  try {
    done = work->wait();
  } catch (...) {
    lost_contact(op, current_cause());
  }
  if (!done) lost_contact(op, "the operation was aborted");
}

void Group::record(const char* op, int64_t bytes, std::chrono::steady_clock::time_point t0) {
  CommStats& c = stats_[op];
  ++c.calls;
  c.bytes += bytes;
  c.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Group::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  const char* op = "all_reduce";
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    check_dense(t, job_rank_, op);
    reduce_type(t.scalar_type(), job_rank_, op);
  }
  if (!active()) return;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Staged> staged;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  int64_t bytes = 0;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;  // the same on every rank: shapes match
    staged.push_back(stage_sum(t, job_rank_, op));
    bytes += staged.back().wire.nbytes();
    std::vector<at::Tensor> one{staged.back().wire};
    works.push_back(start(job_rank_, op, [&] { return pg_->allreduce(one); }));
  }
  for (size_t i = 0; i < works.size(); ++i) {
    wait(works[i], op);
    staged[i].write_back();
  }
  record(op, bytes, t0);
}

void Group::all_reduce_mean_bucketed(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  const char* op = "all_reduce";
  if (bucket_bytes <= 0) fail(cat("rank ", job_rank_, ": all_reduce_mean_bucketed: bucket size ", bucket_bytes, " must be > 0"));
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    check_dense(t, job_rank_, op);
    if (!at::isFloatingType(t.scalar_type()))
      fail(cat("rank ", job_rank_, ": all_reduce_mean_bucketed: ", t.scalar_type(),
               " tensor; only floating-point tensors can be averaged"));
  }
  if (!active()) return;
  const auto t0 = std::chrono::steady_clock::now();

  // Buckets per (dtype, device), filled in list order; a full bucket is closed and a new one
  // opened. The order of `ready` depends only on the list, so it is the same on every rank.
  struct Bucket {
    std::vector<at::Tensor> members;
    int64_t bytes = 0;
  };
  struct Open {
    at::ScalarType dtype;
    at::Device device;
    Bucket bucket;
  };
  std::vector<Open> open;
  std::vector<Bucket> ready;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    auto it = std::find_if(open.begin(), open.end(),
                           [&](const Open& o) { return o.dtype == t.scalar_type() && o.device == t.device(); });
    if (it == open.end()) {
      open.push_back(Open{t.scalar_type(), t.device(), Bucket{}});
      it = open.end() - 1;
    }
    const int64_t nbytes = t.numel() * static_cast<int64_t>(t.element_size());
    Bucket& b = it->bucket;
    if (!b.members.empty() && b.bytes + nbytes > bucket_bytes) {
      ready.push_back(std::move(b));
      b = Bucket{};
    }
    b.members.push_back(t);
    b.bytes += nbytes;
  }
  for (auto& o : open)
    if (!o.bucket.members.empty()) ready.push_back(std::move(o.bucket));

  // Flatten each bucket into a private CPU buffer in the reduction dtype (a lone tensor that is
  // already such a buffer is reduced in place), start every allreduce, then finish them in order.
  std::vector<at::Tensor> flats;
  std::vector<bool> in_place;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (const auto& b : ready) {
    const at::Tensor& first = b.members.front();
    const at::ScalarType rt = reduce_type(first.scalar_type(), job_rank_, op);
    at::Tensor flat;
    bool direct = false;
    if (b.members.size() == 1 && first.device().is_cpu() && first.is_contiguous() && first.scalar_type() == rt) {
      flat = first.view({-1});
      direct = true;
    } else {
      std::vector<at::Tensor> parts;
      parts.reserve(b.members.size());
      for (const auto& m : b.members) parts.push_back(m.reshape({-1}));
      // cat makes a fresh tensor; a lone reshape may be a view of the caller's and is copied.
      const bool fresh = parts.size() > 1;
      at::Tensor joined = fresh ? at::cat(parts) : parts.front();
      flat = joined.to(at::kCPU, rt, /*non_blocking=*/false, /*copy=*/!fresh).contiguous();
    }
    flats.push_back(flat);
    in_place.push_back(direct);
    std::vector<at::Tensor> one{flat};
    works.push_back(start(job_rank_, op, [&] { return pg_->allreduce(one); }));
  }
  const double scale = static_cast<double>(world_size_);
  for (size_t i = 0; i < works.size(); ++i) {
    wait(works[i], op);
    at::Tensor& flat = flats[i];
    flat.div_(scale);
    if (in_place[i]) continue;
    int64_t offset = 0;
    for (auto m : ready[i].members) {
      const int64_t n = m.numel();
      m.copy_(flat.narrow(0, offset, n).view(m.sizes()));
      offset += n;
    }
  }
  int64_t bytes = 0;
  for (const auto& f : flats) bytes += f.nbytes();
  record(op, bytes, t0);
}

void Group::broadcast(at::Tensor& t, int64_t root) {
  const char* op = "broadcast";
  check_dense(t, job_rank_, op);
  bits_type(t.scalar_type(), job_rank_, op);
  if (root < 0 || root >= world_size_)
    fail(cat("rank ", job_rank_, ": broadcast: root ", root, " is not a rank (0..", world_size_ - 1, ")"));
  if (!active() || t.numel() == 0) return;
  const auto t0 = std::chrono::steady_clock::now();
  Staged s = stage_bits(t, job_rank_, op);
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.rootTensor = 0;
  std::vector<at::Tensor> one{s.wire};
  auto work = start(job_rank_, op, [&] { return pg_->broadcast(one, opts); });
  wait(work, op);
  s.write_back();
  record(op, root == rank_ ? static_cast<int64_t>(t.nbytes()) : 0, t0);
}

void Group::barrier() {
  if (!active()) return;
  const auto t0 = std::chrono::steady_clock::now();
  auto work = start(job_rank_, "barrier", [&] { return pg_->barrier(); });
  wait(work, "barrier");
  record("barrier", 0, t0);
}

std::vector<std::string> Group::all_gather_strings(const std::string& mine) {
  const char* op = "all_gather";
  if (!active()) return {mine};
  const auto t0 = std::chrono::steady_clock::now();
  // Gathers one same-shaped CPU tensor from every rank.
  auto gather = [&](const at::Tensor& in) {
    std::vector<at::Tensor> inputs{in};
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int64_t r = 0; r < world_size_; ++r) outputs[0].push_back(at::empty_like(in));
    auto work = start(job_rank_, op, [&] { return pg_->allgather(outputs, inputs); });
    wait(work, op);
    return outputs[0];
  };
  const auto lengths = gather(at::full({1}, static_cast<int64_t>(mine.size()), at::kLong));
  std::vector<int64_t> len(world_size_);
  // At least one byte: Gloo's allgather divides by the buffer size (SIGFPE on empty buffers).
  int64_t longest = 1;
  for (int64_t r = 0; r < world_size_; ++r) {
    len[r] = lengths[r].item<int64_t>();
    if (len[r] < 0) lost_contact(op, cat("rank ", r, " sent a negative length"));
    longest = std::max(longest, len[r]);
  }
  at::Tensor buf = at::zeros({longest}, at::kByte);
  if (!mine.empty()) std::memcpy(buf.data_ptr<uint8_t>(), mine.data(), mine.size());
  const auto bytes = gather(buf);
  std::vector<std::string> out(world_size_);
  for (int64_t r = 0; r < world_size_; ++r)
    out[r].assign(reinterpret_cast<const char*>(bytes[r].data_ptr<uint8_t>()), static_cast<size_t>(len[r]));
  record(op, static_cast<int64_t>(mine.size()), t0);
  return out;
}

at::Tensor Group::all_to_all_single(const at::Tensor& input, const std::vector<int64_t>& input_split_sizes,
                                    const std::vector<int64_t>& output_split_sizes) {
  const char* op = "all_to_all";
  const std::string who = cat("rank ", job_rank_, ": all_to_all_single: ");
  check_dense(input, job_rank_, op);
  if (input.dim() < 1) fail(who + "the input needs at least one dimension (rows)");
  const at::ScalarType bt = bits_type(input.scalar_type(), job_rank_, op);
  const size_t w = static_cast<size_t>(world_size_);
  if (input_split_sizes.size() != w || output_split_sizes.size() != w)
    fail(cat(who, input_split_sizes.size(), " input and ", output_split_sizes.size(), " output split sizes for ",
             world_size_, " ranks"));
  int64_t rows_in = 0, rows_out = 0;
  for (size_t r = 0; r < w; ++r) {
    if (input_split_sizes[r] < 0 || output_split_sizes[r] < 0) fail(who + "negative split size");
    rows_in += input_split_sizes[r];
    rows_out += output_split_sizes[r];
  }
  if (rows_in != input.size(0))
    fail(cat(who, "the input split sizes add up to ", rows_in, " rows but the input has ", input.size(0)));
  std::vector<int64_t> out_shape = input.sizes().vec();
  out_shape[0] = rows_out;
  if (!active()) {
    if (output_split_sizes[0] != input_split_sizes[0])
      fail(cat(who, "one rank sends itself ", input_split_sizes[0], " rows but expects ", output_split_sizes[0]));
    return input.clone();
  }
  int64_t row_numel = 1;
  for (int64_t d = 1; d < input.dim(); ++d) row_numel *= input.size(d);
  if (row_numel == 0) return at::empty(out_shape, input.options());  // nothing to move on any rank

  const auto t0 = std::chrono::steady_clock::now();
  int64_t bytes = 0;  // rows for the other ranks
  for (size_t r = 0; r < w; ++r)
    if (static_cast<int64_t>(r) != rank_) bytes += input_split_sizes[r] * row_numel * input.element_size();
  // Gloo's alltoallv (libtorch 1.13 ProcessGroupGloo::alltoall_base) is used as is, except that
  // an empty piece travels as one padding row: Gloo 0.5 gets zero-length transfers and empty
  // (null) buffers wrong in places. Piece i->j is empty on both ends or on neither, so sender and
  // receiver agree on the padding without talking about it.
  Staged s = stage_bits(input, job_rank_, op);
  std::vector<int64_t> send_rows(w), recv_rows(w);
  bool pad_in = false, pad_out = false;
  for (size_t r = 0; r < w; ++r) {
    send_rows[r] = std::max<int64_t>(input_split_sizes[r], 1);
    recv_rows[r] = std::max<int64_t>(output_split_sizes[r], 1);
    pad_in = pad_in || input_split_sizes[r] == 0;
    pad_out = pad_out || output_split_sizes[r] == 0;
  }
  std::vector<int64_t> row_shape = out_shape;
  row_shape[0] = 1;
  at::Tensor send = s.wire;
  if (pad_in) {
    const at::Tensor pad = at::zeros(row_shape, s.wire.options());
    std::vector<at::Tensor> pieces;
    int64_t offset = 0;
    for (size_t r = 0; r < w; ++r) {
      const int64_t n = input_split_sizes[r];
      pieces.push_back(n > 0 ? s.wire.narrow(0, offset, n) : pad);
      offset += n;
    }
    send = at::cat(pieces);
  }
  std::vector<int64_t> recv_shape = out_shape;
  recv_shape[0] = 0;
  for (int64_t n : recv_rows) recv_shape[0] += n;
  at::Tensor recv = at::empty(recv_shape, s.wire.options());
  // alltoall_base moves the count vectors out of its arguments: pass copies.
  std::vector<int64_t> out_counts = recv_rows, in_counts = send_rows;
  auto work = start(job_rank_, op, [&] { return pg_->alltoall_base(recv, send, out_counts, in_counts); });
  wait(work, op);

  at::Tensor out = recv;
  if (pad_out) {
    std::vector<at::Tensor> pieces;
    int64_t offset = 0;
    for (size_t r = 0; r < w; ++r) {
      if (output_split_sizes[r] > 0) pieces.push_back(recv.narrow(0, offset, output_split_sizes[r]));
      offset += recv_rows[r];
    }
    if (pieces.empty()) {
      std::vector<int64_t> empty_shape = out_shape;
      out = at::empty(empty_shape, s.wire.options());
    } else {
      out = at::cat(pieces);
    }
  }
  if (bt != input.scalar_type()) out = out.view(input.scalar_type());
  if (!input.device().is_cpu()) out = out.to(input.device());
  record(op, bytes, t0);
  return out;
}

void Group::close() {
  if (pg_) {
    try {
      barrier();
    } catch (const std::exception& e) {
      log_warn("dist: ", e.what());
    }
  }
  pg_.reset();
  store_.reset();
}

// ---------------------------------------------------------------- init / shutdown

namespace {

// Keys apart per torchrun restart, so a restarted job never reads a dead attempt's keys.
std::string restart_count() { return env_var("TORCHELASTIC_RESTART_COUNT").value_or("0"); }

}  // namespace

std::shared_ptr<Group> init(const DistEnv& env, std::chrono::milliseconds timeout) {
  if (env.world_size < 1 || env.rank < 0 || env.rank >= env.world_size)
    fail(cat("dist: rank ", env.rank, " of ", env.world_size, " ranks is not a place in the job"));
  if (!env.active())
    return std::make_shared<Group>(c10::intrusive_ptr<c10d::Store>(), c10::intrusive_ptr<c10d::ProcessGroup>(), 0, 1);
  if (timeout.count() <= 0) fail("dist: the timeout must be positive");
  if (env.master_port < 1 || env.master_port > 65535)
    fail(cat("dist: master port ", env.master_port, " is not a port number (1-65535)"));
  if (env.world_size > 65536) fail(cat("dist: ", env.world_size, " ranks is more than this supports"));
  ignore_sigpipe();

  const int rank = static_cast<int>(env.rank), size = static_cast<int>(env.world_size);
  auto unreachable = [&](const std::string& cause) {
    return Error(cat("rank ", rank, ": could not reach the other ranks during rendezvous at ", env.master_addr, ":",
                     env.master_port, " (", cause, "); the run stops"));
  };
  log_debug("dist: rank ", rank, " of ", size, ": rendezvous at ", env.master_addr, ":", env.master_port,
            " (timeout ", timeout.count(), " ms)");

  // Rank 0 serves the store and, with waitWorkers, returns only once all ranks have connected.
  // Under torchrun the elastic agent already serves it at MASTER_PORT
  // (TORCHELASTIC_USE_AGENT_STORE=True, as torch.distributed's env:// init reads it): every rank
  // is then a client.
  const auto agent = env_var("TORCHELASTIC_USE_AGENT_STORE");
  const bool agent_store = agent && *agent == "True";
  c10::intrusive_ptr<c10d::Store> store;
  try {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(env.master_port);
    opts.isServer = rank == 0 && !agent_store;
    if (!agent_store) opts.numWorkers = static_cast<std::size_t>(size);
    opts.waitWorkers = !agent_store;
    opts.timeout = timeout;
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, opts);
  } catch (...) {
    throw unreachable(current_cause());
  }

  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  try {
    if (const auto ifnames = env_var("GLOO_SOCKET_IFNAME")) {
      for (const auto& name : split(*ifnames, ','))
        if (!trim(name).empty()) options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(trim(name)));
    }
    if (options->devices.empty()) {
      options->devices.push_back(is_loopback(env.master_addr)
                                     ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                     : c10d::ProcessGroupGloo::createDefaultDevice());
    }
  } catch (...) {
    throw Error(cat("rank ", rank, ": cannot set up the Gloo transport (", current_cause(), ")"));
  }

  // Gloo connects every pair of ranks through the store (keys under our prefix, so the store can
  // serve other groups later).
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  try {
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("moeforge/default_pg/" + restart_count(), store);
    pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, size, options);
  } catch (...) {
    throw unreachable(current_cause());
  }
  auto group = std::make_shared<Group>(std::move(store), std::move(pg), env.rank, env.world_size);
  group->gloo_options_ = options;
  group->prefix_ = "moeforge/default_pg/" + std::string(restart_count());
  return group;
}

void shutdown(std::shared_ptr<Group>& group) {
  if (!group) return;
  group->close();
  group.reset();
}

}  // namespace mf::dist
