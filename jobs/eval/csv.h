// CSV as RFC 4180 defines it, for the MMLU files (written by Python's csv module: quoted fields
// hold commas, doubled quotes and newlines). A small parser of our own rather than a library:
// Debian's libcsv is a callback-based C library that would be a new build and install dependency
// for some sixty lines of code.
//
// Accepted: records ending in LF or CRLF (the last may end at end of file without one); fields
// separated by commas; a field that starts with '"' is quoted and runs to the next lone '"', with
// "" standing for one '"' and commas and line breaks inside taken literally. An empty line is a
// record of one empty field, as in RFC 4180. Rejected (std::invalid_argument naming the line): a
// '"' inside an unquoted field, anything but a comma or line end after a closing quote, and a
// quoted field still open at end of input.
#pragma once

#include <string>
#include <vector>

namespace shc::jobs::eval {

using CsvRecord = std::vector<std::string>;

// The records of `text`, each with its fields unquoted.
std::vector<CsvRecord> parse_csv(const std::string& text);

}  // namespace shc::jobs::eval
