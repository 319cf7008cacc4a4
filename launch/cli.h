// The `shc` command line (SPEC §8): `shc <job> [--config FILE.ini]... [--section.key value]...`.
// A function rather than code in main() so tests drive exactly what the executable runs.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace shc::launch {

// Parses argv (argv[0] is the program name), runs the chosen job and returns the process exit
// code: 0 done, 2 usage or config error, a jobs::ExitError's own code, 1 any other failure.
// Help and version text go to out; errors to err.
int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

// The candidate closest to word by edit distance, or "" when none is close enough to be a
// plausible typo. A word without a '.' also matches the key part of "section.key" candidates,
// so "lr" finds "train.lr".
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace shc::launch
