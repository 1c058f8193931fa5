#include "csv.hpp"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include <fmt/format.h>

#include "../../core/error.hpp"

namespace unroll::examples {
namespace {
std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) out.push_back(cell);
  if (!line.empty() && line.back() == ',') out.emplace_back();  // getline drops a trailing empty cell
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + v[i];
  return s;
}
}  // namespace

int CsvTable::column(const std::string& name) const {
  for (std::size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == name) return static_cast<int>(i);
  return -1;
}

CsvTable read_csv(const std::string& path) {
  std::ifstream in(path);
  UNROLL_CHECK(in.good(), IoError, "read_csv: cannot open '{}'; got {}, expected a readable CSV file", path,
               std::strerror(errno));
  CsvTable table;
  std::string line;
  UNROLL_CHECK(static_cast<bool>(std::getline(in, line)), IoError,
               "read_csv: '{}' has no header; got an empty file, expected a header row", path);
  table.columns = split_commas(line);
  for (std::size_t n = 2; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    const std::vector<std::string> cells = split_commas(line);
    UNROLL_CHECK(cells.size() == table.columns.size(), IoError,
                 "read_csv: '{}' line {}: wrong number of cells; got {}, expected {}", path, n, cells.size(),
                 table.columns.size());
    std::vector<CsvCell> row;
    for (const std::string& c : cells) {
      if (c.empty()) {
        row.emplace_back();
        continue;
      }
      double v = 0;
      const auto [end, err] = std::from_chars(c.data(), c.data() + c.size(), v);
      UNROLL_CHECK(err == std::errc() && end == c.data() + c.size(), IoError,
                   "read_csv: '{}' line {}: not a number; got '{}', expected a number or an empty cell", path, n, c);
      row.push_back(v);
    }
    table.rows.push_back(std::move(row));
  }
  return table;
}

CsvWriter::CsvWriter(std::string path, std::vector<std::string> columns, std::optional<double> keep_through)
    : path_(std::move(path)) {
  table_.columns = std::move(columns);
  if (keep_through) {
    // A file we cannot parse, or one with other columns, is from some other program: start over.
    try {
      CsvTable old = read_csv(path_);
      if (old.columns == table_.columns)
        for (auto& r : old.rows)
          if (r.at(0) && *r[0] <= *keep_through) table_.rows.push_back(std::move(r));
    } catch (const IoError&) {
    }
  }
  file_ = std::fopen(path_.c_str(), "w");
  UNROLL_CHECK(file_ != nullptr, IoError, "CsvWriter: cannot write '{}'; got {}, expected a writable path", path_,
               std::strerror(errno));
  fmt::print(file_, "{}\n", join(table_.columns));
  for (const auto& r : table_.rows) write_row(r);
  std::fflush(file_);
}

CsvWriter::~CsvWriter() {
  if (file_) std::fclose(file_);
}

void CsvWriter::write_row(const std::vector<CsvCell>& cells) {
  std::string line;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    if (i) line += ',';
    if (cells[i]) line += fmt::format("{}", *cells[i]);  // fmt's shortest form reads back to the same double
  }
  fmt::print(file_, "{}\n", line);
}

void CsvWriter::row(const std::vector<CsvCell>& cells) {
  UNROLL_CHECK(cells.size() == table_.columns.size(), ValueError,
               "CsvWriter::row: wrong number of cells; got {}, expected {}", cells.size(), table_.columns.size());
  write_row(cells);
  UNROLL_CHECK(std::fflush(file_) == 0 && !std::ferror(file_), IoError,
               "CsvWriter::row: cannot write '{}'; got {}, expected a writable file", path_, std::strerror(errno));
  table_.rows.push_back(cells);
}

}  // namespace unroll::examples
