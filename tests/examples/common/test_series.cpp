// examples/common/series: CSV parsing, column selection, and the error texts for the user's bad files.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "../../../examples/common/series.hpp"
#include "scratch.hpp"

using namespace unroll::examples;

namespace {
std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = test_support::scratch_file(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}
std::string message_of(const std::string& path, const std::string& column) {
  try {
    read_series("prog", "--data", path, column);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_SUITE("examples/common/series") {
  TEST_CASE("parse_text_table skips blank lines, accepts CRLF and records each row's line") {
    const TextTable t = parse_text_table("prog", "--data", "x.csv", "a, b\r\n1,2\r\n\r\n3 ,4\n");
    CHECK(t.columns == std::vector<std::string>{"a", "b"});
    REQUIRE(t.rows.size() == 2);
    CHECK(t.rows[1] == std::vector<std::string>{"3 ", "4"});
    CHECK(t.lines == std::vector<std::int64_t>{2, 4});
    CHECK(t.column("b") == 1);
    CHECK(t.column("c") == -1);
  }

  TEST_CASE("parse_text_table: quoted cells hold commas and doubled quotes (RFC 4180, within a line)") {
    const TextTable t =
        parse_text_table("prog", "--data", "x.csv", "src,text,label\namazon,\"Good case, \"\"great\"\" value.\",pos\n\"\",b,c\n");
    REQUIRE(t.rows.size() == 2);
    CHECK(t.rows[0] == std::vector<std::string>{"amazon", "Good case, \"great\" value.", "pos"});
    CHECK(t.rows[1] == std::vector<std::string>{"", "b", "c"});
    CHECK_THROWS_WITH_AS(parse_text_table("prog", "--data", "x.csv", "a,b\n\"open,1\n"),
                         "prog: --data file is not CSV; got a quoted cell that does not close at line 2 of 'x.csv', "
                         "expected \"...\" followed by ',' or the end of the line",
                         unroll::examples::UsageError);
    CHECK_THROWS_WITH_AS(parse_text_table("prog", "--data", "x.csv", "a,b\n\"x\"y,1\n"),
                         doctest::Contains("got text after a closing quote (at character 4) at line 2"),
                         unroll::examples::UsageError);
  }

  TEST_CASE("read_series picks a numeric column, with the first column as labels") {
    const std::string path = write_file("ok.csv", "date,value,flag\n2001-01-06,1.5,0\n2001-01-13, -2e1 ,1\n");
    const Series s = read_series("prog", "--data", path, "value");
    CHECK(s.column == "value");
    CHECK(s.values == std::vector<double>{1.5, -20.0});
    CHECK(s.labels == std::vector<std::string>{"2001-01-06", "2001-01-13"});
  }

  TEST_CASE("the user's bad files get one-line messages that say where") {
    CHECK(message_of(write_file("ragged.csv", "t,v\n1,2\n2,3,4\n"), "v") ==
          "prog: --data file is not CSV; got 3 cell(s) at line 3 of '" + test_support::scratch_file("ragged.csv") +
              "', expected 2 as in the header (t, v)");
    CHECK(message_of(write_file("nan.csv", "t,v\n1,2\n2,abc\n"), "v") ==
          "prog: --data file has a value that is not a number; got 'abc' at line 3 of '" +
              test_support::scratch_file("nan.csv") + "', expected a number in column 'v'");
    CHECK(message_of(write_file("inf.csv", "t,v\n1,inf\n"), "v").find("got 'inf' at line 2") != std::string::npos);
    CHECK(message_of(write_file("gap.csv", "t,v\n1,\n"), "v").find("got '' at line 2") != std::string::npos);
    CHECK(message_of(write_file("col.csv", "t,v\n1,2\n"), "w") ==
          "prog: no such column in the --data file; got column 'w' in '" + test_support::scratch_file("col.csv") +
              "', expected one of t, v");
    CHECK(message_of(write_file("blank.csv", "\n \n"), "v") ==
          "prog: --data file is not CSV; got no header row in '" + test_support::scratch_file("blank.csv") +
              "', expected a header row of names separated by ','");
    CHECK(
        message_of(write_file("noname.csv", "t,,v\n"), "v").find("got an empty column name in the header at line 1") !=
        std::string::npos);
    CHECK(message_of(test_support::scratch_file("missing.csv"), "v").find("prog: cannot read --data file; got '") == 0);
  }

}  // TEST_SUITE
