// Task and group registry: the built-in tasks (src/eval/tasks/, one file per task) plus custom tasks
// loaded from YAML files.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "eval/task.h"

namespace mf::eval {

class TaskRegistry {
 public:
  // All built-in tasks and groups.
  static TaskRegistry builtin();

  void add_task(TaskDef task);  // replaces a task of the same name
  void add_group(GroupDef group);
  const TaskDef* find_task(const std::string& name) const;
  const GroupDef* find_group(const std::string& name) const;
  std::vector<std::string> task_names() const;
  std::vector<std::string> group_names() const;
  // Leaf task names of a task or group, depth first in definition order; mf::Error for unknown names.
  std::vector<std::string> expand(const std::string& name) const;

 private:
  std::map<std::string, TaskDef> tasks_;
  std::map<std::string, GroupDef> groups_;
};

// Resolves a task's data file under data_dir (first existing candidate) or fails with
// "<first candidate>: no such file (nor <others>) for task '<name>'".
std::string resolve_data_file(const TaskDef& task, const std::string& data_dir);
// Loads a task's documents (the task's loader, else JSONL).
std::vector<Doc> load_task_docs(const TaskDef& task, const std::string& path);

}  // namespace mf::eval
