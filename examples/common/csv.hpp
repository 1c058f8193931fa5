#pragma once
// Metrics as CSV: a header row, then one row per call, numbers written so they read back exactly (shortest
// round-trip form), an empty cell for a value not measured at that row. Each row is flushed, so a run that
// is killed keeps everything up to its last row. A resumed run keeps the rows up to its checkpoint's step and
// drops the ones after it (they belong to the steps it is about to redo).
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace unroll::examples {

/// One CSV cell: a number, or empty.
using CsvCell = std::optional<double>;

/// A numeric CSV table: column names and rows of cells.
struct CsvTable {
  std::vector<std::string> columns;
  std::vector<std::vector<CsvCell>> rows;
  /// The index of column `name`, or -1.
  int column(const std::string& name) const;
};

/// A CSV file written by CsvWriter -> its table. unroll::IoError "read_csv: '<path>' line <n>: <what>; got ...,
/// expected ..." for a missing file, a missing header, a row with the wrong number of cells or a cell that is
/// not a number.
CsvTable read_csv(const std::string& path);

class CsvWriter {
 public:
  /// Creates `path` (replacing it) with a header row of `columns`. With `keep_through`, an existing file with
  /// the same header keeps its rows whose first column is <= *keep_through (a resumed run); a file with
  /// another header, or none, starts over. IoError if the file cannot be written.
  CsvWriter(std::string path, std::vector<std::string> columns, std::optional<double> keep_through = std::nullopt);
  CsvWriter(const CsvWriter&) = delete;
  CsvWriter& operator=(const CsvWriter&) = delete;
  ~CsvWriter();

  /// Appends a row (one cell per column: ValueError otherwise) and flushes it to disk.
  void row(const std::vector<CsvCell>& cells);
  /// Every row written, including those kept from a resumed run (for plotting).
  const CsvTable& table() const { return table_; }
  const std::string& path() const { return path_; }

 private:
  void write_row(const std::vector<CsvCell>& cells);
  std::string path_;
  CsvTable table_;
  std::FILE* file_ = nullptr;
};

}  // namespace unroll::examples
