// The examples' metrics CSV (examples/common/csv.hpp) on arbitrary bytes: read_csv gives a table or an IoError
// naming the file. A table it accepts must survive what a resumed run does with it: CsvWriter with keep_through
// rewrites the file with the kept rows, and reading that back gives exactly those rows (numbers round-trip).
// Seeds: corpus/fuzz_csv (metrics files as the examples write them, with empty cells).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>

#include "../../examples/common/csv.hpp"
#include "../../examples/common/error.hpp"
#include "fuzz_support.hpp"

namespace {
using namespace unroll;
using examples::CsvCell;

bool same_cell(const CsvCell& a, const CsvCell& b) {
  if (!a || !b) return !a && !b;
  return std::memcmp(&*a, &*b, sizeof(double)) == 0 || (std::isnan(*a) && std::isnan(*b)) || *a == *b;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static fuzz::InputFile file("metrics.csv");
  const std::string& path = file.write(data, size);
  examples::CsvTable table;
  if (!fuzz::expect_ok_or<IoError>("read_csv", path, [&] { table = examples::read_csv(path); })) return 0;
  for (const auto& row : table.rows)
    if (row.size() != table.columns.size()) fuzz::fail("read_csv: a row's length differs from the header's");

  // Resume at the middle row's step (or keep everything when there is no row).
  const double keep =
      table.rows.empty() || !table.rows[table.rows.size() / 2][0] ? INFINITY : *table.rows[table.rows.size() / 2][0];
  std::vector<std::vector<CsvCell>> kept;
  for (const auto& row : table.rows)
    if (row[0] && *row[0] <= keep) kept.push_back(row);
  if (!fuzz::expect_ok_or<IoError>("CsvWriter", path, [&] { examples::CsvWriter writer(path, table.columns, keep); }))
    fuzz::fail("CsvWriter: cannot rewrite the file it resumes from");
  examples::CsvTable again;
  if (!fuzz::expect_ok_or<IoError>("read_csv of CsvWriter's file", path, [&] { again = examples::read_csv(path); }))
    fuzz::fail("read_csv: refuses the file CsvWriter wrote");
  if (again.columns != table.columns) fuzz::fail("CsvWriter: the header does not read back");
  if (again.rows.size() != kept.size())
    fuzz::fail(fmt::format("CsvWriter: kept {} rows, read back {}", kept.size(), again.rows.size()));
  for (std::size_t r = 0; r < kept.size(); ++r)
    for (std::size_t c = 0; c < kept[r].size(); ++c)
      if (!same_cell(kept[r][c], again.rows[r][c]))
        fuzz::fail(fmt::format("CsvWriter: row {} column {} does not read back", r, c));
  return 0;
}
