// examples/common/csv: round trip, a resumed run keeping its earlier rows, error texts.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "../../../core/error.hpp"
#include "../../../examples/common/csv.hpp"
#include "scratch.hpp"

using unroll::examples::CsvTable;
using unroll::examples::CsvWriter;
using unroll::examples::read_csv;

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

TEST_SUITE("examples/common/csv") {
  TEST_CASE("rows are written exactly, empty cells stay empty, and read back to the same doubles") {
    const std::string path = test_support::scratch_file("round_trip.csv");
    {
      CsvWriter w(path, {"step", "loss", "val"});
      w.row({1, 0.1, std::nullopt});
      w.row({2, 1.0 / 3.0, 2.5e-7});
      CHECK(w.table().rows.size() == 2);
    }
    CHECK(slurp(path) == "step,loss,val\n1,0.1,\n2,0.3333333333333333,2.5e-07\n");
    const CsvTable t = read_csv(path);
    REQUIRE(t.rows.size() == 2);
    CHECK(t.columns == std::vector<std::string>{"step", "loss", "val"});
    CHECK(t.column("val") == 2);
    CHECK(t.column("nope") == -1);
    CHECK_FALSE(t.rows[0][2].has_value());
    CHECK(*t.rows[1][1] == 1.0 / 3.0);  // bit-exact
    CHECK(*t.rows[1][2] == 2.5e-7);
  }

  TEST_CASE("a resumed run keeps the rows up to its step and drops the later ones") {
    const std::string path = test_support::scratch_file("resume.csv");
    {
      CsvWriter w(path, {"step", "loss"});
      for (int s = 10; s <= 50; s += 10) w.row({static_cast<double>(s), 1.0 / s});
    }
    {
      CsvWriter w(path, {"step", "loss"}, 30.0);
      CHECK(w.table().rows.size() == 3);
      w.row({40, 0.5});
    }
    CHECK(slurp(path) == "step,loss\n10,0.1\n20,0.05\n30,0.03333333333333333\n40,0.5\n");
    // Another header: the old rows are not ours, start over.
    CsvWriter w(path, {"step", "other"}, 30.0);
    CHECK(w.table().rows.empty());
  }

  TEST_CASE("CSV error texts") {
    const std::string path = test_support::scratch_file("bad.csv");
    std::ofstream(path) << "a,b\n1,2\n3\n";
    CHECK_THROWS_WITH_AS(read_csv(path),
                         ("read_csv: '" + path + "' line 3: wrong number of cells; got 1, expected 2").c_str(),
                         unroll::IoError);
    std::ofstream(path) << "a,b\n1,x\n";
    CHECK_THROWS_WITH_AS(
        read_csv(path),
        ("read_csv: '" + path + "' line 2: not a number; got 'x', expected a number or an empty cell").c_str(),
        unroll::IoError);
    CsvWriter w(test_support::scratch_file("ok.csv"), {"a", "b"});
    CHECK_THROWS_WITH_AS(w.row({1}), "CsvWriter::row: wrong number of cells; got 1, expected 2", unroll::ValueError);
    CHECK_THROWS_AS(CsvWriter(test_support::scratch_file("no/such/dir/x.csv"), {"a"}), unroll::IoError);
  }
}
