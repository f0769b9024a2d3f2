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

std::string resolve_data_file(const TaskDef& task, const std::string& data_dir) {
  std::vector<std::string> tried;
  for (const auto& rel : task.data_files) {
    std::string p = path_join(data_dir, rel);
    if (path_exists(p)) return p;
    tried.push_back(p);
  }
  if (tried.empty()) fail("task '" + task.name + "': no data file is defined");
  // "<file>: <what>", naming the first (canonical) candidate and the others looked for.
  std::string also;
  if (tried.size() > 1)
    also = " (nor " + join(std::vector<std::string>(tried.begin() + 1, tried.end()), ", ") + ")";
  fail_file(tried[0], "no such file" + also + " for task '" + task.name + "'");
}

std::vector<Doc> load_task_docs(const TaskDef& task, const std::string& path) {
  if (task.load) return task.load(path, -1);
  return load_jsonl(path, -1);
}

}  // namespace mf::eval
