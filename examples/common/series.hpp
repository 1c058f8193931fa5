#pragma once
// Reading the user's CSV files with messages that say what is wrong and where, never a crash: a header row,
// then rows of cells separated by ',' (a cell in double quotes may hold
// commas, "" inside it is one quote — RFC 4180 within one line). read_text_table gives the cells as
// text (the classifier's name,label rows); read_series picks one numeric column (the forecaster's series).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "error.hpp"

namespace unroll::examples {

/// A CSV file as text: the header's column names and, per data row, its cells and its line number in the file.
struct TextTable {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::int64_t> lines;  ///< 1-based line of each row (the header is line 1)
  /// The index of column `name`, or -1.
  int column(std::string_view name) const;
};

/// One numeric column of a CSV file, in file order, with the first column's text as each value's label (a date).
struct Series {
  std::string column;
  std::vector<double> values;
  std::vector<std::string> labels;
};

/// Parses CSV bytes read from `path` (named in messages). Blank lines are skipped and "\r\n" is accepted.
/// UsageError "<program>: <flag> file is not CSV; got <what> at line <n> of '<path>', expected <expected>" for no
/// header, an empty column name, or a row whose number of cells differs from the header's.
TextTable parse_text_table(std::string_view program, std::string_view flag, const std::string& path,
                           std::string_view bytes);

/// read_data_file (data.hpp) + parse_text_table: missing, unreadable, empty and malformed files are UsageErrors.
TextTable read_text_table(std::string_view program, std::string_view flag, const std::string& path);

/// Column `column` of the CSV file `path` as numbers. UsageError for the file errors above, a column the header
/// lacks ("... got column 'x' in '<path>', expected one of a, b"), or a cell that is not a finite number
/// ("... got 'abc' at line <n> of '<path>', expected a number in column '<column>'").
Series read_series(std::string_view program, std::string_view flag, const std::string& path, const std::string& column);

}  // namespace unroll::examples
