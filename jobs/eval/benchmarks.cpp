// summarize(): the per-task and overall results of a benchmark (the runners are in mmlu.cpp,
// gsm8k.cpp and bbh.cpp).
#include "jobs/eval/benchmarks.h"

#include <map>
#include <set>
#include <stdexcept>
#include <utility>

namespace shc::jobs::eval {

namespace {

struct Tally {
  int64_t n = 0;
  int64_t correct = 0;
  int64_t truncated = 0;
  double rate() const { return static_cast<double>(correct) / static_cast<double>(n); }
};

}  // namespace

nlohmann::json summarize(const std::vector<ExampleResult>& results, const std::string& metric) {
  if (results.empty()) throw std::invalid_argument("summarize: no results");
  std::map<std::string, Tally> tasks;  // sorted, so the JSON is the same for any rank order
  std::set<std::pair<std::string, int64_t>> seen;
  Tally all;
  for (const auto& r : results) {
    if (!seen.emplace(r.task, r.example).second) {
      throw std::invalid_argument("summarize: task '" + r.task + "' example " +
                                  std::to_string(r.example) + " is counted twice");
    }
    for (Tally* t : {&tasks[r.task], &all}) {
      ++t->n;
      t->correct += r.correct;
      t->truncated += r.truncated;
    }
  }
  nlohmann::json out;
  out["tasks"] = nlohmann::json::object();
  double macro = 0;
  for (const auto& [name, t] : tasks) {
    out["tasks"][name] = {
        {metric, t.rate()}, {"n", t.n}, {"correct", t.correct}, {"truncated", t.truncated}};
    macro += t.rate();
  }
  out["overall"] = {{metric, all.rate()},
                    {"macro_" + metric, macro / static_cast<double>(tasks.size())},
                    {"n", all.n},
                    {"correct", all.correct},
                    {"truncated", all.truncated},
                    {"tasks", static_cast<int64_t>(tasks.size())}};
  return out;
}

}  // namespace shc::jobs::eval
