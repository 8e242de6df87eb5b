#pragma once
/// CSV fields as RFC 4180 writes them, so that a file name holding a comma or a quote stays one
/// field for Python's csv module, pandas and spreadsheets.
#include <string>

namespace reidnet {

/// `text` as one CSV field: unchanged unless it holds a comma, a double quote, CR or LF; then
/// enclosed in double quotes, with each double quote inside doubled.
inline std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

}  // namespace reidnet
