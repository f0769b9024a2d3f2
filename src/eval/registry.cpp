#include "eval/registry.h"

#include "eval/jsonl.h"
#include "eval/tasks/tasks.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf::eval {

TaskRegistry TaskRegistry::builtin() {
  TaskRegistry r;
  register_arc(r);
  register_piqa(r);
  register_openbookqa(r);
  register_winogrande(r);
  register_sciq(r);
  register_social_iqa(r);
  register_boolq(r);
  register_hellaswag(r);
  register_rte(r);
  register_mmlu(r);
  register_lambada(r);
  register_wikitext(r);
  return r;
}

void TaskRegistry::add_task(TaskDef task) {
  std::string name = task.name;
  tasks_[name] = std::move(task);
}

void TaskRegistry::add_group(GroupDef group) {
  std::string name = group.name;
  groups_[name] = std::move(group);
}

const TaskDef* TaskRegistry::find_task(const std::string& name) const {
  auto it = tasks_.find(name);
  return it == tasks_.end() ? nullptr : &it->second;
}

const GroupDef* TaskRegistry::find_group(const std::string& name) const {
  auto it = groups_.find(name);
  return it == groups_.end() ? nullptr : &it->second;
}

std::vector<std::string> TaskRegistry::task_names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : tasks_) out.push_back(k);
  return out;
}

std::vector<std::string> TaskRegistry::group_names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : groups_) out.push_back(k);
  return out;
}

std::vector<std::string> TaskRegistry::expand(const std::string& name) const {
  if (find_task(name)) return {name};
  const GroupDef* g = find_group(name);
  if (!g) fail("unknown task '" + name + "' (known: " + join(task_names(), ", ") + "; groups: " +
               join(group_names(), ", ") + ")");
  std::vector<std::string> out;
  for (const auto& c : g->children) {
    auto sub = expand(c);
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

TaskData find_task_data(const TaskDef& task, const std::string& data_dir) {
  if (task.data_files.empty()) fail("task '" + task.name + "': no data file is defined");
  std::vector<std::string> looked;
  for (size_t i = 0; i < task.data_files.size(); ++i) {
    const DataLayout& l = task.data_files[i];
    std::string p = path_join(data_dir, l.file);
    if (path_exists(p)) return {p, i};
    looked.push_back(l.what.empty() ? p : l.file + " (" + l.what + ")");
  }
  const std::string first = path_join(data_dir, task.data_files[0].file);
  const std::string head = "no such file for task '" + task.name + "'";
  if (looked.size() == 1) fail_file(first, head);
  bool named = false;
  for (const auto& l : task.data_files) named = named || !l.what.empty();
  if (!named)  // YAML candidates: absolute paths, as given
    fail_file(first, "no such file (nor " + join(std::vector<std::string>(looked.begin() + 1, looked.end()), ", ") +
                         ") for task '" + task.name + "'");
  fail_file(first, head + "; looked under " + data_dir + " for: " + join(looked, ", "));
}

std::vector<Doc> load_task_data(const TaskDef& task, const TaskData& data, int64_t limit) {
  const DataLayout* l = data.layout < task.data_files.size() ? &task.data_files[data.layout] : nullptr;
  if (l && l->read) return l->read(data.path, limit);
  if (task.load) return task.load(data.path, limit);
  return load_jsonl(data.path, limit);
}

std::string resolve_data_file(const TaskDef& task, const std::string& data_dir) {
  return find_task_data(task, data_dir).path;
}

std::vector<Doc> load_task_docs(const TaskDef& task, const std::string& path) {
  TaskData data{path, task.data_files.size()};
  size_t best = 0;
  for (size_t i = 0; i < task.data_files.size(); ++i) {
    const std::string& f = task.data_files[i].file;
    const bool tail =
        path == f || (ends_with(path, f) && path.size() > f.size() && path[path.size() - f.size() - 1] == '/');
    if (tail && f.size() > best) {
      best = f.size();
      data.layout = i;
    }
  }
  return load_task_data(task, data);
}

}  // namespace mf::eval
