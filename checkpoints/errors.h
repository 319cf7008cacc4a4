// Errors of the checkpoint library (SPEC §7): one exception type for every problem with a
// checkpoint or export file — a missing or unreadable file, a failed write (full disk, file size
// limit, I/O error), a corrupt header, a checksum mismatch — so that jobs map it to exit code 3
// (or a fallback to the previous checkpoint) in one place.
#pragma once

#include <stdexcept>
#include <string>

namespace shc::checkpoints {

// what() is the whole message, and it always names the file it is about.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace shc::checkpoints
