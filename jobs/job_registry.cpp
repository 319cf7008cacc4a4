#include "jobs/job.h"

namespace shc::jobs {

Job::~Job() = default;

JobRegistry& JobRegistry::instance() {
  // Function-local static: safe to use from other translation units' static initialisers.
  static JobRegistry registry;
  return registry;
}

void JobRegistry::add(JobInfo info) {
  if (info.name.empty() || !info.make) {
    throw std::logic_error("job registration needs a name and a factory");
  }
  std::string name = info.name;
  if (!jobs_.emplace(name, std::move(info)).second) {
    throw std::logic_error("duplicate job name '" + name + "'");
  }
}

const JobInfo* JobRegistry::find(const std::string& name) const {
  auto it = jobs_.find(name);
  return it == jobs_.end() ? nullptr : &it->second;
}

std::vector<const JobInfo*> JobRegistry::list() const {
  std::vector<const JobInfo*> out;
  for (const auto& [name, job] : jobs_) out.push_back(&job);
  return out;
}

JobRegistrar::JobRegistrar(JobInfo info) {
  JobRegistry::instance().add(std::move(info));
}

}  // namespace shc::jobs
