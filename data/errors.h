// Errors of the data pipeline (SPEC §6): one exception type for every problem with a data file,
// an input text or an output directory, so that jobs map it to exit code 3 in one place.
#pragma once

#include <stdexcept>
#include <string>

namespace shc::data {

// A missing, corrupt or inconsistent data file (the message names it), an empty input text, an
// output directory that already holds shards. Jobs turn it into jobs::ExitError(kExitData, ...).
// Bad option values (a negative seq_len, an unknown tokenizer spec) are std::invalid_argument.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace shc::data
