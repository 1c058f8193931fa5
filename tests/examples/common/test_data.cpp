// examples/common/data: the messages for a missing, empty or non-regular data file; fingerprint; printable.
#include <doctest/doctest.h>

#include <fstream>

#include "../../../examples/common/data.hpp"
#include "scratch.hpp"

using namespace unroll::examples;

TEST_SUITE("examples/common/data") {
  TEST_CASE("read_data_file returns the bytes, or says what is wrong with the file") {
    const std::string path = test_support::scratch_file("text.txt");
    std::ofstream(path, std::ios::binary) << "two\nlines\n";
    CHECK(read_data_file("prog", "--data", path) == "two\nlines\n");
    const std::string missing = test_support::scratch_file("missing.txt");
    CHECK_THROWS_WITH_AS(
        read_data_file("prog", "--data", missing),
        ("prog: cannot read --data file; got '" + missing + "' (no such file), expected a readable text file").c_str(),
        UsageError);
    const std::string empty = test_support::scratch_file("empty.csv");
    std::ofstream(empty).flush();
    CHECK_THROWS_WITH_AS(
        read_data_file("prog", "--series", empty, "CSV file"),
        ("prog: --series file is empty; got '" + empty + "' (0 bytes), expected a CSV file with data").c_str(),
        UsageError);
    const std::string dir = test_support::scratch_dir().string();
    CHECK_THROWS_WITH_AS(
        read_data_file("prog", "--data", dir),
        ("prog: cannot read --data file; got '" + dir + "' (not a regular file), expected a readable text file")
            .c_str(),
        UsageError);
  }

  TEST_CASE("fingerprint is 64-bit FNV-1a; printable escapes control and non-ASCII bytes") {
    CHECK(fingerprint("") == 0xcbf29ce484222325ull);
    CHECK(fingerprint("a") == 0xaf63dc4c8601ec8cull);
    CHECK(fingerprint("ab") != fingerprint("ba"));
    CHECK(printable("a\nb\t\\\x01\xc2\xa3") == "a\\nb\\t\\\\\\x01\\xc2\\xa3");
  }
}
