// The examples' data-file readers (examples/common/series.hpp, data.hpp) on arbitrary bytes: each gives its
// result or a UsageError naming the file (the examples print it and exit with code 2). parse_text_table on the
// bytes and read_text_table on the same bytes as a file must agree; a table's rows have the header's width;
// read_series of its last column gives one finite number and one label per row.
// Seeds: corpus/fuzz_text_table (the bundled data sets' first lines, CRLF and blank lines, bad cells).
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>

#include "../../examples/common/data.hpp"
#include "../../examples/common/error.hpp"
#include "../../examples/common/series.hpp"
#include "fuzz_support.hpp"

namespace {
using namespace unroll;
using examples::UsageError;

bool same_table(const examples::TextTable& a, const examples::TextTable& b) {
  return a.columns == b.columns && a.rows == b.rows && a.lines == b.lines;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static fuzz::InputFile file("data.csv");
  const std::string& path = file.write(data, size);
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  std::string read;
  const bool readable = fuzz::expect_ok_or<UsageError>(
      "read_data_file", path, [&] { read = examples::read_data_file("fuzz", "--data", path); });
  if (readable && read != bytes) fuzz::fail("read_data_file: the bytes differ from the file's");
  if (!readable && size != 0) fuzz::fail("read_data_file: refused a non-empty regular file");

  examples::TextTable parsed, table;
  const bool parsed_ok = fuzz::expect_ok_or<UsageError>(
      "parse_text_table", path, [&] { parsed = examples::parse_text_table("fuzz", "--data", path, bytes); });
  const bool table_ok = fuzz::expect_ok_or<UsageError>(
      "read_text_table", path, [&] { table = examples::read_text_table("fuzz", "--data", path); });
  if (size != 0 && (parsed_ok != table_ok || (table_ok && !same_table(parsed, table))))
    fuzz::fail("read_text_table and parse_text_table disagree on the same bytes");
  if (!table_ok) return 0;
  if (table.rows.size() != table.lines.size()) fuzz::fail("read_text_table: rows and line numbers differ in count");
  for (const auto& row : table.rows)
    if (row.size() != table.columns.size()) fuzz::fail("read_text_table: a row's width differs from the header's");

  examples::Series series;
  if (!fuzz::expect_ok_or<UsageError>(
          "read_series", path, [&] { series = examples::read_series("fuzz", "--data", path, table.columns.back()); }))
    return 0;
  if (series.values.size() != table.rows.size() || series.labels.size() != table.rows.size())
    fuzz::fail("read_series: not one value and one label per row");
  for (const double v : series.values)
    if (!std::isfinite(v)) fuzz::fail("read_series: a value is not finite");
  return 0;
}
