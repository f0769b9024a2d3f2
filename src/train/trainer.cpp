#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <mutex>

#include "io/safetensors.h"
#include "util/compat.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/str.h"

namespace mf {

namespace {

constexpr const char* kStateFile = "trainer_state.json";

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

// step-N directory names under dir, sorted by N.
std::vector<std::pair<int64_t, std::string>> checkpoint_dirs(const std::string& out_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::string dir = path_join(out_dir, "checkpoints");
  if (!is_directory(dir)) return out;
  for (const auto& name : list_dir(dir)) {
    if (name.size() != 13 || name.rfind("step-", 0) != 0) continue;
    if (name.find_first_not_of("0123456789", 5) != std::string::npos) continue;
    std::string path = path_join(dir, name);
    if (!path_exists(path_join(path, kStateFile))) continue;
    out.emplace_back(std::stoll(name.substr(5)), path);
  }
  std::sort(out.begin(), out.end());
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Keeps the metrics lines of steps <= `step` (those a resumed run does not redo). A last line
// cut short by the kill is dropped; a broken line anywhere else is an error.
void truncate_metrics(const std::string& path, int64_t step) {
  if (!path_exists(path)) return;
  std::vector<std::string> lines;
  for (const auto& line : split(read_file(path), '\n'))
    if (!trim(line).empty()) lines.push_back(line);
  std::string kept;
  for (size_t i = 0; i < lines.size(); ++i) {
    json j;
    try {
      j = parse_json(lines[i], cat(path, ":", i + 1));
    } catch (const Error&) {
      if (i + 1 == lines.size()) break;
      throw;
    }
    if (json_get<int64_t>(j, "step", cat(path, ":", i + 1)) <= step) kept += lines[i] + "\n";
  }
  write_file_atomic(path, kept);
}

std::string loss_text(double loss) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", loss);
  return buf;
}

json loss_map_json(const std::map<std::string, double>& m) {
  json j = json::object();
  for (const auto& [k, v] : m) j[k] = v;
  return j;
}

// A loss term's value is a metrics key: it must not overwrite the loop's own or another term's.
void check_loss_terms(const std::vector<LossTerm>& terms) {
  static const char* const reserved[] = {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "val_loss"};
  std::vector<std::string> seen;
  for (const auto& t : terms) {
    if (t.name.empty()) fail("trainer: a loss term has no name");
    if (!t.fn) fail("trainer: loss term '" + t.name + "' has no function");
    for (const char* r : reserved)
      if (t.name == r) fail("trainer: loss term name '" + t.name + "' is a key of the metrics line");
    if (std::find(seen.begin(), seen.end(), t.name) != seen.end())
      fail("trainer: two loss terms are named '" + t.name + "'");
    seen.push_back(t.name);
  }
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> module_tensors(torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters(true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(true)) out.emplace_back(item.key(), item.value());
  return out;
}

void load_module_tensors(torch::nn::Module& module, const std::string& path) {
  auto file = SafetensorsFile::open(path);
  at::NoGradGuard no_grad;
  for (auto& [name, t] : module_tensors(module)) {
    const StTensorInfo* info = file->find(name);
    if (!info) fail_file(path, "no tensor '" + name + "'");
    at::Tensor src = file->get(name);
    if (src.sizes() != t.sizes()) fail_file(path, "tensor '" + name + "' has the wrong shape");
    t.copy_(src);
  }
}

at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& windows) {
  const int64_t T = windows.size(1) - 1;
  at::Tensor targets = windows.slice(1, 1, T + 1).reshape({-1});
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), targets);
}

std::string latest_checkpoint(const std::string& out_dir) {
  auto dirs = checkpoint_dirs(out_dir);
  return dirs.empty() ? std::string() : dirs.back().second;
}

std::map<std::string, double> evaluate_domains(torch::nn::Module& model, const BatchLossFn& loss_fn,
                                               const std::vector<std::pair<std::string, PackedSequences>>& domains,
                                               int64_t batch_size, int64_t max_batches, bool bf16,
                                               const std::function<double(const at::Tensor&)>& targets_in) {
  std::map<std::string, double> out;
  const bool was_training = model.is_training();
  model.eval();
  at::NoGradGuard no_grad;
  for (const auto& [name, data] : domains) {
    int64_t n = data.size();
    if (max_batches > 0) n = std::min(n, max_batches * batch_size);
    if (n == 0) continue;
    double sum = 0.0, weight = 0.0;
    for (int64_t begin = 0; begin < n; begin += batch_size) {
      std::vector<int64_t> idx;
      for (int64_t i = begin; i < std::min(n, begin + batch_size); ++i) idx.push_back(i);
      const at::Tensor windows = data.windows(idx);
      at::Tensor loss;
      {
        CpuAutocast autocast(bf16, at::kBFloat16);
        loss = loss_fn(windows);
      }
      // Each batch's mean weighted by its target tokens: the domain's token mean, whatever the
      // batch size (packed windows all hold seq_len targets: weighting by windows is the same).
      const double w = targets_in ? targets_in(windows) : static_cast<double>(idx.size());
      sum += loss.item<double>() * w;
      weight += w;
    }
    out[name] = weight > 0 ? sum / weight : 0.0;
  }
  if (was_training) model.train();
  return out;
}

TrainResult train_loop(torch::nn::Module& model, const BatchLossFn& loss_fn, const PackedSequences& train,
                       const std::vector<std::pair<std::string, PackedSequences>>& validation,
                       const TrainerOptions& options) {
  if (options.out_dir.empty()) fail("trainer: no output directory");
  if (options.grad_accum <= 0) fail("grad_accum must be positive");
  if (options.max_steps <= 0) fail("max_steps must be positive");
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size)
    fail(cat("trainer: rank ", options.rank, " is outside [0, world_size ", options.world_size, ")"));
  check_loss_terms(options.loss_terms);
  const bool writer = options.is_writer();
  if (writer) make_dirs(path_join(options.out_dir, "checkpoints"));
  const std::string metrics_path = path_join(options.out_dir, "metrics.jsonl");

  LrSchedule schedule = options.schedule;
  schedule.max_steps = options.max_steps;
  AdamW optimizer(select_params(module_tensors(model), options.no_decay_1d, options.no_decay_names), options.adamw);
  // Global batches; this rank's share is its contiguous slice (docs/training.md).
  ShuffledBatches batches(train, options.batch_size * options.world_size, options.seed);
  auto next_batch = [&]() {
    std::vector<int64_t> idx = batches.next_indices();
    const auto begin = idx.begin() + options.rank * options.batch_size;
    return train.windows(std::vector<int64_t>(begin, begin + options.batch_size));
  };
  // Counted over all ranks: "tokens" describes the run, not the rank.
  const int64_t tokens_per_step = options.batch_size * options.world_size * options.grad_accum * train.seq_len();
  std::vector<at::Tensor> grad_params;
  for (const auto& p : optimizer.params()) grad_params.push_back(p.param);

  TrainResult result;
  int64_t step = 0;
  int64_t tokens_seen = 0;
  const std::string ckpt = options.resume ? latest_checkpoint(options.out_dir) : std::string();
  if (!ckpt.empty()) {
    const std::string state_path = path_join(ckpt, kStateFile);
    json st = read_json_file(state_path);
    // Checked first: another world_size also changes the data order and every rank's shard.
    // Checkpoints from before world_size was recorded were written by one process.
    const int64_t ckpt_world = json_get_or<int64_t>(st, "world_size", 1, state_path);
    if (ckpt_world != options.world_size)
      fail_file(state_path, cat("checkpoint written with world_size ", ckpt_world, ", this run has ",
                                options.world_size, "; resume with ", ckpt_world,
                                " ranks or use a new output directory"));
    for (auto [key, want] : {std::pair<const char*, int64_t>{"batch_size", options.batch_size},
                             {"grad_accum", options.grad_accum},
                             {"seq_len", train.seq_len()},
                             {"train_sequences", train.size()}}) {
      int64_t have = json_get<int64_t>(st, key, state_path);
      if (have != want)
        fail_file(state_path, cat("checkpoint was written with ", key, " ", have, ", the run now has ", want,
                                  " (use a new output directory)"));
    }
    if (json_get<int64_t>(st, "seed", state_path) != static_cast<int64_t>(options.seed))
      fail_file(state_path, "checkpoint was written with another seed (use a new output directory)");
    step = json_get<int64_t>(st, "step", state_path);
    tokens_seen = json_get<int64_t>(st, "tokens_seen", state_path);
    load_module_tensors(model, path_join(ckpt, "model.safetensors"));
    const std::string opt_path = path_join(ckpt, "optimizer.safetensors");
    auto opt_file = SafetensorsFile::open(opt_path);
    std::vector<std::pair<std::string, at::Tensor>> opt_tensors;
    for (const auto& info : opt_file->tensors()) opt_tensors.emplace_back(info.name, opt_file->get(info.name));
    optimizer.load_state(opt_tensors, json_get<int64_t>(st, "optimizer_steps", state_path), opt_path);
    if (!opt_file->contains("rng.cpu")) fail_file(opt_path, "no tensor 'rng.cpu'");
    {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(opt_file->get("rng.cpu").clone());
    }
    const std::string data_origin = state_path + " (data)";
    const json& d = st.at("data");
    batches.restore({json_get<int64_t>(d, "epoch", data_origin), json_get<int64_t>(d, "offset", data_origin)});
    if (writer) truncate_metrics(metrics_path, step);
    result.last_loss = json_get_or<double>(st, "last_loss", 0.0, state_path);
    if (st.contains("val_loss") && st["val_loss"].is_object())
      for (auto it = st["val_loss"].begin(); it != st["val_loss"].end(); ++it)
        result.val_loss[it.key()] = json_get<double>(st["val_loss"], it.key(), state_path);
    result.last_checkpoint = ckpt;
    log_info("resuming from ", ckpt, " (step ", step, ")");
  } else {
    // Starting over in a directory with checkpoints would mix two runs (a later resume
    // would pick whichever step number is higher).
    if (!latest_checkpoint(options.out_dir).empty())
      fail_file(options.out_dir, "holds checkpoints of an earlier run; resume it or use a new output directory");
    if (writer) write_file_atomic(metrics_path, "");
  }
  result.start_step = step;

  auto save = [&](int64_t at_step) {
    const std::string final_dir = path_join(path_join(options.out_dir, "checkpoints"), step_dir_name(at_step));
    std::vector<std::pair<std::string, at::Tensor>> weights = module_tensors(model), opt = optimizer.state_tensors();
    if (options.complete_tensors) {  // expert parallelism: every rank takes part
      options.complete_tensors(weights, {""});
      options.complete_tensors(opt, {"exp_avg.", "exp_avg_sq."});
    }
    result.last_checkpoint = final_dir;  // on the other ranks: the checkpoint rank 0 writes
    if (!writer) return;
    AtomicDir dir(final_dir);
    save_safetensors(path_join(dir.path(), "model.safetensors"), weights);
    {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      opt.emplace_back("rng.cpu", gen.get_state());
    }
    save_safetensors(path_join(dir.path(), "optimizer.safetensors"), opt);
    json st = {{"format", "moeforge-trainer-state"},
               {"version", 1},
               {"step", at_step},
               {"optimizer_steps", optimizer.steps_taken()},
               {"tokens_seen", tokens_seen},
               {"batch_size", options.batch_size},
               {"grad_accum", options.grad_accum},
               {"world_size", options.world_size},
               {"seq_len", train.seq_len()},
               {"train_sequences", train.size()},
               {"seed", static_cast<int64_t>(options.seed)},
               {"data", {{"epoch", batches.position().epoch}, {"offset", batches.position().offset}}},
               // What the run reports at its end: a run resumed from its last step does no step.
               {"last_loss", result.last_loss},
               {"val_loss", loss_map_json(result.val_loss)}};
    write_json_file(path_join(dir.path(), kStateFile), st);
    dir.commit();
    if (options.keep_checkpoints > 0) {
      auto dirs = checkpoint_dirs(options.out_dir);
      for (size_t i = 0; i + options.keep_checkpoints < dirs.size(); ++i) remove_all(dirs[i].second);
    }
  };

  std::ofstream metrics;
  if (writer) {
    metrics.open(metrics_path, std::ios::app);
    if (!metrics) fail_file(metrics_path, "cannot open for appending");
  }

  std::unique_ptr<Progress> bar;
  if (options.progress && writer)
    bar = std::make_unique<Progress>("train", (options.max_steps - step) * tokens_per_step, "tok");
  double train_seconds = 0.0;
  int64_t tokens_this_run = 0;
  model.train();
  while (step < options.max_steps) {
    auto t0 = std::chrono::steady_clock::now();
    const double lr = schedule.at(step);
    optimizer.zero_grad();
    double loss_sum = 0.0;
    std::vector<double> term_sums(options.loss_terms.size(), 0.0);
    for (int64_t micro = 0; micro < options.grad_accum; ++micro) {
      at::Tensor batch = next_batch();
      at::Tensor loss;
      {
        CpuAutocast autocast(options.bf16, at::kBFloat16);
        loss = loss_fn(batch);
        // After loss_fn, so a term can read what this forward pass recorded.
        for (size_t i = 0; i < options.loss_terms.size(); ++i) {
          at::Tensor term = options.loss_terms[i].fn();
          if (!term.defined() || term.numel() != 1)
            fail("trainer: loss term '" + options.loss_terms[i].name + "' did not return a one-element tensor");
          term_sums[i] += term.item<double>();
          loss = loss + term;
        }
      }
      // Micro-batches hold equal token counts, so averaging their means is the batch mean.
      (loss / static_cast<double>(options.grad_accum)).backward();
      loss_sum += loss.item<double>();
    }
    double loss = loss_sum / static_cast<double>(options.grad_accum);
    if (!std::isfinite(loss)) fail(cat("step ", step + 1, ": the loss is not finite (", loss, "); lower lr or check the data"));
    // After the finiteness check: a rank that stops here then leaves the others waiting in the
    // all-reduce (an error) instead of spreading NaN into their gradients (silent).
    if (options.on_gradients) options.on_gradients(grad_params);
    if (options.average_over_ranks) {
      std::vector<double> values{loss};
      values.insert(values.end(), term_sums.begin(), term_sums.end());
      options.average_over_ranks(values);
      loss = values[0];
      std::copy(values.begin() + 1, values.end(), term_sums.begin());
    }
    const double grad_norm =
        clip_grad_norm(optimizer.params(), options.clip,
                       options.grad_norm_sq ? std::sqrt(options.grad_norm_sq(grad_params)) : -1.0);
    optimizer.step(lr);
    ++step;
    if (options.after_step) options.after_step(step);
    tokens_seen += tokens_per_step;
    tokens_this_run += tokens_per_step;
    const double dt = seconds_since(t0);
    train_seconds += dt;

    json line = {{"step", step},
                 {"loss", loss},
                 {"lr", lr},
                 {"grad_norm", grad_norm},
                 {"tokens", tokens_seen},
                 {"tokens_per_s", dt > 0 ? tokens_per_step / dt : 0.0}};
    for (size_t i = 0; i < options.loss_terms.size(); ++i)
      line[options.loss_terms[i].name] = term_sums[i] / static_cast<double>(options.grad_accum);
    if (options.step_metrics)
      for (const auto& [k, v] : options.step_metrics()) line[k] = v;
    const bool last = step == options.max_steps;
    if ((options.eval_every > 0 && step % options.eval_every == 0) || last) {
      if (!validation.empty()) {
        // Every rank evaluates the windows of eval_batches global batches, in its own batch size.
        const int64_t val_batches = options.eval_batches > 0 ? options.eval_batches * options.world_size : 0;
        result.val_loss = evaluate_domains(model, loss_fn, validation, options.batch_size, val_batches, options.bf16,
                                           options.targets_in);
        line["val_loss"] = loss_map_json(result.val_loss);
      }
    }
    if (writer) {
      metrics << line.dump() << "\n";
      metrics.flush();
    }
    result.last_loss = loss;
    if (bar) {
      bar->advance(tokens_per_step);
      bar->set_postfix(cat("step ", step, "/", options.max_steps, " loss ", loss_text(loss)));
    }
    if ((options.save_every > 0 && step % options.save_every == 0) || last) save(step);
    if (options.stop_after_step >= 0 && step >= options.stop_after_step) break;
  }
  if (bar) bar->finish();
  result.steps = step;
  result.tokens_per_s = train_seconds > 0 ? tokens_this_run / train_seconds : 0.0;
  return result;
}

}  // namespace mf
