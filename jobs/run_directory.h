// The run directory every rank of a job writes into (SPEC §7, §8): rank 0 decides it, creates it,
// and all ranks prove they see the same directory before anything is saved there.
#pragma once

#include <string>

namespace shc::jobs {

// Collective. Rank 0's `requested` becomes every rank's run directory; rank 0 creates it (an
// ExitError, exit 3, naming it when that fails, e.g. a regular file in the way). Then rank 0
// writes a random token into it and every rank reads it back: a rank that finds another token or
// none is not on the same (shared) filesystem, and every rank ends with an ExitError (exit 3)
// saying so. Returns the directory.
std::string open_run_directory(std::string requested);

// Renames an existing `path` to the first free `path.1`, `path.2`, ... so that a fresh run keeps
// an earlier run's file. Returns the new name, or "" when `path` did not exist.
std::string move_aside(const std::string& path);

}  // namespace shc::jobs
