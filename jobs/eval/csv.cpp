#include "jobs/eval/csv.h"

#include <stdexcept>

namespace shc::jobs::eval {

std::vector<CsvRecord> parse_csv(const std::string& text) {
  std::vector<CsvRecord> records;
  size_t i = 0;
  int64_t line = 1;  // for messages: the physical line where the parser is
  const auto fail = [&](const std::string& what) {
    throw std::invalid_argument("CSV line " + std::to_string(line) + ": " + what);
  };
  while (i < text.size()) {
    CsvRecord record;
    while (true) {  // one field per iteration
      std::string field;
      if (i < text.size() && text[i] == '"') {
        const int64_t opened_at = line;
        ++i;
        while (true) {
          if (i >= text.size()) {
            line = opened_at;
            fail("quoted field not closed before the end of the file");
          }
          const char c = text[i++];
          if (c == '"') {
            if (i < text.size() && text[i] == '"') {
              field += '"';
              ++i;
            } else {
              break;
            }
          } else {
            if (c == '\n') ++line;
            field += c;
          }
        }
        if (i < text.size() && text[i] != ',' && text[i] != '\n' &&
            !(text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n')) {
          fail("unexpected character after a closing quote");
        }
      } else {
        while (i < text.size() && text[i] != ',' && text[i] != '\n' &&
               !(text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n')) {
          if (text[i] == '"') fail("'\"' inside an unquoted field");
          field += text[i++];
        }
      }
      record.push_back(std::move(field));
      if (i < text.size() && text[i] == ',') {
        ++i;
        continue;
      }
      break;  // end of record: a line end or the end of the text
    }
    if (i < text.size()) {
      i += text[i] == '\r' ? 2 : 1;
      ++line;
    }
    records.push_back(std::move(record));
  }
  return records;
}

}  // namespace shc::jobs::eval
