// What the MPI benchmark programs (ddp_bench, fsdp_bench) share: `--key value` command lines,
// medians, and elementwise reductions over the ranks.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace shc::bench {

// Thrown for --help (or -h); what() is the usage text, for stdout and exit code 0.
class HelpRequested : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Calls set(key, value) for each `--key value` pair of argv; `set` returns false for a key it does
// not know. --help throws HelpRequested; a key without a value and an unknown key throw
// std::invalid_argument.
inline void parse_options(int argc, char** argv, const std::string& usage,
                          const std::function<bool(const std::string&, const std::string&)>& set) {
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    if (key == "--help" || key == "-h") throw HelpRequested(usage);
    if (i + 1 >= argc) throw std::invalid_argument(key + " needs a value");
    if (!set(key, argv[++i]))
      throw std::invalid_argument("unknown option " + key + " (see --help)");
  }
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Elementwise maximum (or sum, ...) over the ranks of MPI_COMM_WORLD.
inline std::vector<double> over_ranks(std::vector<double> v, MPI_Op op) {
  MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE, op, MPI_COMM_WORLD);
  return v;
}

}  // namespace shc::bench
