#include "series.hpp"

#include <optional>

#include <charconv>
#include <cmath>
#include <system_error>

#include <fmt/format.h>

#include "data.hpp"

namespace unroll::examples {
namespace {

// The cells of one CSV line. A cell that starts with a double quote runs to the closing one and may hold commas
// ("" inside is one quote), as RFC 4180 (a quoted cell does not span lines here). nullopt: a quote left open, or
// text after a closing quote (`why` says which).
std::optional<std::vector<std::string>> split_cells(std::string_view line, std::string& why) {
  std::vector<std::string> cells;
  std::size_t pos = 0;
  while (true) {
    if (pos < line.size() && line[pos] == '"') {
      std::string cell;
      std::size_t i = pos + 1;
      while (true) {
        if (i >= line.size()) {
          why = "a quoted cell that does not close";
          return std::nullopt;
        }
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            cell += '"', i += 2;
            continue;
          }
          break;
        }
        cell += line[i++];
      }
      cells.push_back(std::move(cell));
      pos = i + 1;  // just past the closing quote: the end, or a comma
      if (pos == line.size()) break;
      if (line[pos] != ',') {
        why = fmt::format("text after a closing quote (at character {})", pos + 1);
        return std::nullopt;
      }
      ++pos;
      continue;
    }
    const std::size_t end = line.find(',', pos);
    cells.emplace_back(line.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos));
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return cells;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s;
}

}  // namespace

int TextTable::column(std::string_view name) const {
  for (std::size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == name) return static_cast<int>(i);
  return -1;
}

TextTable parse_text_table(std::string_view program, std::string_view flag, const std::string& path,
                           std::string_view bytes) {
  TextTable table;
  std::int64_t line_no = 0;
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    std::size_t end = bytes.find('\n', pos);
    if (end == std::string_view::npos) end = bytes.size();
    std::string_view line = bytes.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // a file saved on Windows
    if (trim(line).empty()) continue;
    std::string why;
    std::optional<std::vector<std::string>> split = split_cells(line, why);
    UNROLL_CHECK(split.has_value(), examples::UsageError,
                 "{}: {} file is not CSV; got {} at line {} of '{}', expected \"...\" followed by ',' or the end of "
                 "the line",
                 program, flag, why, line_no, path);
    std::vector<std::string> cells = std::move(*split);
    if (table.columns.empty()) {
      for (auto& c : cells) {
        c = std::string(trim(c));
        UNROLL_CHECK(!c.empty(), examples::UsageError,
                     "{}: {} file is not CSV; got an empty column name in the header at line {} of '{}', expected a "
                     "header row of names separated by ','",
                     program, flag, line_no, path);
      }
      table.columns = std::move(cells);
      continue;
    }
    UNROLL_CHECK(cells.size() == table.columns.size(), examples::UsageError,
                 "{}: {} file is not CSV; got {} cell(s) at line {} of '{}', expected {} as in the header ({})",
                 program, flag, cells.size(), line_no, path, table.columns.size(), join(table.columns));
    table.rows.push_back(std::move(cells));
    table.lines.push_back(line_no);
  }
  UNROLL_CHECK(!table.columns.empty(), examples::UsageError,
               "{}: {} file is not CSV; got no header row in '{}', expected a header row of names separated by ','",
               program, flag, path);
  return table;
}

TextTable read_text_table(std::string_view program, std::string_view flag, const std::string& path) {
  const std::string bytes = read_data_file(program, flag, path, "CSV file");
  return parse_text_table(program, flag, path, bytes);
}

Series read_series(std::string_view program, std::string_view flag, const std::string& path,
                   const std::string& column) {
  const TextTable table = read_text_table(program, flag, path);
  const int col = table.column(column);
  UNROLL_CHECK(col >= 0, examples::UsageError,
               "{}: no such column in the {} file; got column '{}' in '{}', expected one of {}", program, flag, column,
               path, join(table.columns));
  Series s{.column = column, .values = {}, .labels = {}};
  s.values.reserve(table.rows.size());
  for (std::size_t r = 0; r < table.rows.size(); ++r) {
    const std::string_view cell = trim(table.rows[r][static_cast<std::size_t>(col)]);
    double v = NAN;
    const auto [end, err] = std::from_chars(cell.data(), cell.data() + cell.size(), v);
    UNROLL_CHECK(!cell.empty() && err == std::errc() && end == cell.data() + cell.size() && std::isfinite(v),
                 examples::UsageError,
                 "{}: {} file has a value that is not a number; got '{}' at line {} of '{}', expected a number in "
                 "column '{}'",
                 program, flag, printable(cell), table.lines[r], path, column);
    s.values.push_back(v);
    s.labels.push_back(std::string(trim(table.rows[r][0])));
  }
  return s;
}

}  // namespace unroll::examples
