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

// The data file found for a task: its path and which of the task's layouts it is.
struct TaskData {
  std::string path;
  size_t layout = 0;  // index into TaskDef::data_files
};

// The first of the task's data_files that exists under data_dir, or one error line naming what was
// looked for: "<first>: no such file for task '<name>'" when there is one candidate, else
// "<first>: no such file for task '<name>'; looked under <data_dir> for: <file> (<layout>), ...".
TaskData find_task_data(const TaskDef& task, const std::string& data_dir);
// Reads the documents in the canonical HF layout (the layout's reader, else the task's loader, else
// JSONL). limit < 0: all.
std::vector<Doc> load_task_data(const TaskDef& task, const TaskData& data, int64_t limit = -1);

// The same for callers that hold only a path: resolve_data_file = find_task_data(...).path;
// load_task_docs reads `path` with the layout whose file is the longest tail of it.
std::string resolve_data_file(const TaskDef& task, const std::string& data_dir);
std::vector<Doc> load_task_docs(const TaskDef& task, const std::string& path);

}  // namespace mf::eval
