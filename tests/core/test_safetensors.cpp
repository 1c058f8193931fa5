// safetensors files: round trips, the exact bytes written, reading a file laid out the way the safetensors
// library writes it (tools/make_safetensors_fixtures.py), and hand-made broken files with their error text.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unroll/core/safetensors.hpp>
#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;
namespace fs = std::filesystem;

namespace {
// An int64 tensor of `shape` from integers.
Tensor i64(const std::vector<std::int64_t>& values, const Shape& shape) { return index_tensor(values, shape); }

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "unroll_safetensors_XXXXXX").string();
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    return out;
  }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const std::string& path, const std::string& bytes) {
  fs::remove(path);  // a new file: ext4 flushes a file truncated over old data (auto_da_alloc), ~1 ms each
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out);
}
std::string u64_le(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}
// A safetensors file from a header text and a buffer, the header's size field set to match.
std::string file_of(const std::string& header, const std::string& buffer) {
  return u64_le(header.size()) + header + buffer;
}
std::string bytes_of(const Tensor& t) {
  return {static_cast<const char*>(t.raw()), static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype())};
}
std::string f32_bytes(std::initializer_list<float> values) {
  std::string s;
  for (float v : values) s.append(reinterpret_cast<const char*>(&v), sizeof v);
  return s;
}

// Writes a hand-made file and checks load_safetensors rejects it with `what` after "load_safetensors: '<path>': ".
void check_rejected(const TempDir& dir, const std::string& bytes, const std::string& what) {
  const std::string path = dir / "broken.safetensors";
  write_bytes(path, bytes);
  CHECK_THROWS_WITH_AS(load_safetensors(path), fmt::format("load_safetensors: '{}': {}", path, what).c_str(), IoError);
}
// A one-tensor header around `entry` (the text of the tensor's JSON object).
std::string header_with(const std::string& entry) { return R"({"a":)" + entry + "}"; }

}  // namespace

TEST_SUITE("core/safetensors") {
  TEST_CASE("round trip of F32, F64 and I64 tensors, 0-d and empty ones, and metadata, bit for bit") {
    TempDir dir;
    const std::string path = dir / "m.safetensors";
    StateDict sd;
    sd.insert("w", tensor({1.5, -2.25, 3.0, 1e-30, -0.0, 7.0}, {2, 3}));
    Tensor nan32 = Tensor::empty({2}, Dtype::float32);
    nan32.data<float>()[0] = std::bit_cast<float>(0x7fc01234u);  // a NaN payload survives: bytes are copied
    nan32.data<float>()[1] = std::bit_cast<float>(0x00000001u);  // smallest subnormal
    sd.insert("nan", nan32);
    sd.insert("d", tensor({0.1, -1e300, 4.9e-324}, {3}, Dtype::float64));
    sd.insert("scalar", tensor({2.5}, {}, Dtype::float64));
    sd.insert("i", i64({-1, 0, INT64_MAX, INT64_MIN}, {2, 2}));
    sd.insert("i0", i64({42}, {}));
    sd.insert("empty", zeros({0, 4}));
    sd.insert("empty64", zeros({3, 0}, Dtype::int64));
    sd.insert("view", arange(6, Dtype::float64).view_as_shape({3, 2})[1]);  // a view with a storage offset
    const std::map<std::string, std::string> meta{{"format", "pt"}, {"empty", ""}, {"unicode", "\u00e9\u2713 \"q\"\n"}};
    save_safetensors(path, sd, meta);

    const SafetensorsFile f = load_safetensors(path);
    CHECK(f.metadata == meta);
    REQUIRE(f.tensors.size() == sd.size());
    auto it = f.tensors.begin();
    for (const auto& [name, t] : sd) {  // same order, dtype, shape and bytes
      CHECK(it->first == name);
      CHECK(it->second.dtype() == t.dtype());
      CHECK(it->second.shape() == t.shape());
      CHECK(bytes_of(it->second) == bytes_of(t));
      CHECK(it->second.storage_offset() == 0);
      ++it;
    }
    CHECK(f.tensors.at("view").to_vector() == std::vector<double>{2, 3});
    CHECK(f.tensors.at("i").to_vector<std::int64_t>() == std::vector<std::int64_t>{-1, 0, INT64_MAX, INT64_MIN});
    CHECK(std::signbit(f.tensors.at("w").to_vector()[4]));

    // No tensors and no metadata is a valid file too; saving again replaces the file.
    save_safetensors(path, StateDict{});
    const SafetensorsFile e = load_safetensors(path);
    CHECK(e.tensors.empty());
    CHECK(e.metadata.empty());
    CHECK(dir.files() == std::vector<std::string>{"m.safetensors"});  // no temp files left behind
  }

  TEST_CASE("the bytes written match the format, byte for byte") {
    TempDir dir;
    const std::string path = dir / "tiny.safetensors";
    StateDict sd;
    sd.insert("a", tensor({1.0, -2.0}, {2}));
    sd.insert("i", i64({7}, {}));
    save_safetensors(path, sd, {{"k", "v"}});
    // 132 bytes of compact JSON, __metadata__ first, + 4 spaces to a multiple of 8 = 136 = 0x88.
    const std::string expected = std::string("\x88\0\0\0\0\0\0\0", 8) +
                                 R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                 R"("i":{"dtype":"I64","shape":[],"data_offsets":[8,16]}}    )" +
                                 std::string(
                                     "\x00\x00\x80\x3f"
                                     "\x00\x00\x00\xc0",
                                     8) +                               // 1.0f, -2.0f
                                 std::string("\x07\0\0\0\0\0\0\0", 8);  // int64 7
    CHECK(read_bytes(path) == expected);

    // The empty file is what the safetensors library writes for an empty dict: "{}" and six spaces.
    save_safetensors(path, StateDict{});
    CHECK(read_bytes(path) == std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  }

  TEST_CASE("reads a file laid out by the safetensors library with exact values, and writes the same bytes") {
    const nlohmann::json expected = test_support::load_fixture("torch_reference.json");
    const std::string path = std::string(UNROLL_FIXTURE_DIR) + "/" + expected.at("file").get<std::string>();
    const SafetensorsFile f = load_safetensors(path);

    CHECK(f.metadata == expected.at("metadata").get<std::map<std::string, std::string>>());
    REQUIRE(f.tensors.size() == expected.at("tensors").size());
    auto it = f.tensors.begin();
    for (const auto& e : expected.at("tensors")) {  // in file order
      const std::string name = e.at("name").get<std::string>();
      CAPTURE(name);
      CHECK(it->first == name);
      const Tensor& t = it->second;
      CHECK(dtype_name(t.dtype()) == e.at("dtype").get<std::string>());
      CHECK(t.shape() == Shape(e.at("shape").get<std::vector<std::int64_t>>()));
      if (t.dtype() == Dtype::int64) {
        CHECK(t.to_vector<std::int64_t>() == e.at("data").get<std::vector<std::int64_t>>());
      } else {
        const auto want = e.at("data").get<std::vector<double>>();
        const auto got = t.to_vector();  // float32 widens to double exactly
        REQUIRE(got.size() == want.size());
        for (std::size_t i = 0; i < got.size(); ++i) {
          CHECK(got[i] == want[i]);
          CHECK(std::signbit(got[i]) == std::signbit(want[i]));
        }
      }
      ++it;
    }

    // Saving what was read reproduces the library's file exactly (same order, header text, padding).
    TempDir dir;
    save_safetensors(dir / "again.safetensors", f.tensors, f.metadata);
    CHECK(read_bytes(dir / "again.safetensors") == read_bytes(path));
  }

  TEST_CASE("unreadable, short and wrongly sized files") {
    TempDir dir;
    const std::string missing = dir / "missing.safetensors";
    CHECK_THROWS_WITH_AS(load_safetensors(missing),
                         fmt::format("load_safetensors: '{}': cannot open the file; got No such file or directory, "
                                     "expected a readable safetensors file",
                                     missing)
                             .c_str(),
                         IoError);
    CHECK_THROWS_WITH_AS(load_safetensors(dir.path.string()),
                         fmt::format("load_safetensors: '{}': not a regular file; got mode 40000, expected a regular "
                                     "file",
                                     dir.path.string())
                             .c_str(),
                         IoError);
    check_rejected(dir, "", "file too short for a safetensors header; got 0 bytes, expected at least 8");
    check_rejected(dir, std::string("\x10\0\0\0\0", 5),
                   "file too short for a safetensors header; got 5 bytes, expected at least 8");
    check_rejected(dir, u64_le(9999999) + std::string(120, ' '),
                   "header length out of range; got 9999999 bytes, expected at most 120 (file size 128 - 8)");
    check_rejected(dir, u64_le(~std::uint64_t{0}) + "{}",
                   "header length out of range; got 18446744073709551615 bytes, expected at most 2 (file size 10 - 8)");
    check_rejected(dir, u64_le(3) + "{}",
                   "header length out of range; got 3 bytes, expected at most 2 (file size 10 - 8)");
  }

  TEST_CASE("a header that is not a JSON object") {
    TempDir dir;
    const std::string path = dir / "broken.safetensors";
    for (const std::string& header : {std::string(""), std::string(R"({"a":)"), std::string("{}x"),
                                      std::string("{\"\xff\":1}"), std::string(8, '\0')}) {
      write_bytes(path, file_of(header, ""));
      CHECK_THROWS_WITH_AS(
          load_safetensors(path),
          doctest::Contains(fmt::format("load_safetensors: '{}': header is not valid JSON; got ", path).c_str()),
          IoError);
    }
    // A number too large for a double is nlohmann's out_of_range, not a parse_error; it escaped as that
    // (tests/fuzz/regressions/fuzz_safetensors/number-overflow-in-header.safetensors).
    check_rejected(dir, file_of(R"({"a":1e999})", ""),
                   "header is not valid JSON; got number overflow parsing '1e999', expected a JSON object");
    check_rejected(dir, file_of("[1, 2]  ", ""), "header is not a JSON object; got array, expected an object");
    check_rejected(dir, file_of("\"a\"", ""), "header is not a JSON object; got string, expected an object");
    // Leading and trailing whitespace is fine: the library pads with spaces.
    write_bytes(path, file_of("  {}        ", ""));
    CHECK(load_safetensors(path).tensors.empty());
  }

  TEST_CASE("entries missing a field or with wrong JSON types") {
    TempDir dir;
    const std::string buf = f32_bytes({1, 2});
    check_rejected(dir, file_of(header_with("5"), ""),
                   "tensor 'a' is not an object; got 5, expected an object with dtype, shape and data_offsets");
    check_rejected(dir, file_of(header_with(R"({"shape":[2],"data_offsets":[0,8]})"), buf),
                   R"(tensor 'a' has no dtype; got {"shape":[2],"data_offsets":[0,8]}, expected dtype, shape and )"
                   "data_offsets");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","data_offsets":[0,8]})"), buf),
                   R"(tensor 'a' has no shape; got {"dtype":"F32","data_offsets":[0,8]}, expected dtype, shape and )"
                   "data_offsets");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[2]})"), buf),
                   R"(tensor 'a' has no data_offsets; got {"dtype":"F32","shape":[2]}, expected dtype, shape and )"
                   "data_offsets");
    check_rejected(dir,
                   file_of(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"offsets":[0,8]})"), buf),
                   "tensor 'a' has an unexpected key; got 'offsets', expected only dtype, shape and data_offsets");
    check_rejected(dir, file_of(header_with(R"({"dtype":32,"shape":[2],"data_offsets":[0,8]})"), buf),
                   "tensor 'a' has a dtype that is not a string; got 32, expected F32, F64 or I64");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})"), buf),
                   R"(tensor 'a' has a shape that is not an array; got "2", expected an array of sizes)");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), buf),
                   "tensor 'a' has a shape entry that is not an integer; got shape [2.0], expected integers");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), buf),
                   "tensor 'a' has malformed data_offsets; got [0], expected two integers [begin, end] >= 0");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":["0","8"]})"), buf),
                   R"(tensor 'a' has malformed data_offsets; got ["0","8"], expected two integers [begin, end] >= 0)");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[-1,7]})"), buf),
                   "tensor 'a' has malformed data_offsets; got [-1,7], expected two integers [begin, end] >= 0");
  }

  TEST_CASE("unsupported dtypes and bad shapes") {
    TempDir dir;
    const std::string buf = f32_bytes({1, 2});
    check_rejected(dir, file_of(header_with(R"({"dtype":"BF16","shape":[4],"data_offsets":[0,8]})"), buf),
                   "tensor 'a' has an unsupported dtype; got 'BF16', expected F32, F64 or I64");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]})"), buf),
                   "tensor 'a' has a negative size; got shape [2,-1], expected sizes >= 0");
    check_rejected(
        dir, file_of(header_with(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"), buf),
        "tensor 'a' has too many elements; got shape [4294967296,4294967296], expected at most 2^48 elements");
    check_rejected(
        dir, file_of(header_with(R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]})"), buf),
        "tensor 'a' has too many elements; got shape [18446744073709551615], expected at most 2^48 elements");
    check_rejected(dir,
                   file_of(header_with(R"({"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]})"), buf),
                   "tensor 'a' has too many dimensions; got 9, expected at most 8");
    // After a 0 the element count is 0 whatever follows, so each size is bounded on its own; unchecked, a size
    // past 2^63 became a negative Shape size (tests/fuzz/regressions/fuzz_safetensors).
    check_rejected(
        dir, file_of(header_with(R"({"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]})"), ""),
        "tensor 'a' has a size out of range; got shape [0,18446744073709551615], expected sizes at most 2^48");
    check_rejected(dir, file_of(header_with(R"({"dtype":"I64","shape":[0,281474976710657],"data_offsets":[0,0]})"), ""),
                   "tensor 'a' has a size out of range; got shape [0,281474976710657], expected sizes at most 2^48");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,8]})"), buf),
                   "tensor 'a' byte size does not match its shape and dtype; got 8 bytes, expected 16 for F32 [2, 2]");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F64","shape":[2],"data_offsets":[0,8]})"), buf),
                   "tensor 'a' byte size does not match its shape and dtype; got 8 bytes, expected 16 for F64 [2]");
  }

  TEST_CASE("offsets reversed, out of range, overlapping, gapped or leaving trailing bytes") {
    TempDir dir;
    const std::string two = f32_bytes({1, 2});
    const std::string three = f32_bytes({1, 2, 3});
    const std::string four = f32_bytes({1, 2, 3, 4});
    const std::string five = f32_bytes({1, 2, 3, 4, 5});
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})"), two),
                   "tensor 'a' has reversed data_offsets; got [8, 4], expected begin <= end");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})"), two),
                   "tensor 'a' has data_offsets beyond the buffer; got [4, 12], expected end <= 8 (buffer size)");
    check_rejected(dir,
                   file_of(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]})"), two),
                   "tensor 'a' has data_offsets beyond the buffer; got [0, 18446744073709551615], expected end <= 8 "
                   "(buffer size)");
    const std::string ab = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)";
    check_rejected(dir, file_of(ab + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", three),
                   "tensors 'a' and 'b' overlap; got 'b' at [4, 12], expected it to start at 8 where 'a' ends");
    check_rejected(dir, file_of(ab + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", two),
                   "tensors 'a' and 'b' overlap; got 'b' at [0, 8], expected it to start at 8 where 'a' ends");
    check_rejected(dir, file_of(ab + R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", five),
                   "gap in the buffer before tensor 'b'; got it at [12, 20], expected it to start at 8");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})"), three),
                   "gap in the buffer before tensor 'a'; got it at [4, 12], expected it to start at 0");
    check_rejected(dir, file_of(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), four),
                   "trailing bytes after the last tensor; got a buffer of 16 bytes, expected 8");
    check_rejected(dir, file_of("{}", "x"),
                   "trailing bytes after the last tensor; got a buffer of 1 bytes, expected 0");
    // Header order does not matter, the buffer order does: b then a is fine and loads in buffer order.
    const std::string path = dir / "ok.safetensors";
    write_bytes(path, file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                              two));
    const SafetensorsFile f = load_safetensors(path);
    CHECK(f.tensors.begin()->first == "b");
    CHECK(f.tensors.at("a").item() == 2.0);
    CHECK(f.tensors.at("b").item() == 1.0);
  }

  TEST_CASE("a header nested deeper than any safetensors header is refused before it can overflow the stack") {
    // 100,000 nested arrays once overflowed the stack in the JSON printer that quotes values in error messages
    // (tests/fuzz/regressions/fuzz_safetensors).
    TempDir dir;
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    check_rejected(dir, file_of(header_with(deep), ""),
                   "header nests too deeply; got more than 16 levels of objects and arrays, expected at most 16");
    check_rejected(dir, file_of(R"({"__metadata__":{"k":)" + deep + "}}", ""),
                   "header nests too deeply; got more than 16 levels of objects and arrays, expected at most 16");
    const std::string ok_depth = std::string(15, '[') + "1" + std::string(15, ']');  // 16 levels with the header
    check_rejected(
        dir, file_of(header_with(ok_depth), ""),
        "tensor 'a' is not an object; got " + ok_depth + ", expected an object with dtype, shape and data_offsets");
  }

  TEST_CASE("bad metadata and duplicate names") {
    TempDir dir;
    check_rejected(dir, file_of(R"({"__metadata__":{"k":1}})", ""),
                   "metadata value for 'k' is not a string; got 1, expected a string");
    check_rejected(dir, file_of(R"({"__metadata__":{"k":"v","n":null}})", ""),
                   "metadata value for 'n' is not a string; got null, expected a string");
    check_rejected(dir, file_of(R"({"__metadata__":["k"]})", ""),
                   R"(__metadata__ is not an object; got ["k"], expected an object of strings)");
    const std::string entry = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
    check_rejected(dir, file_of(R"({"a":)" + entry + R"(,"a":)" + entry + "}", f32_bytes({1})),
                   "duplicate key in the header; got 'a' twice, expected unique names");
    check_rejected(dir,
                   file_of(R"({"a":{"dtype":"F32","dtype":"F64","shape":[1],"data_offsets":[0,4]}})", f32_bytes({1})),
                   "duplicate key in the header; got 'dtype' twice, expected unique names");
    check_rejected(dir, file_of(R"({"__metadata__":{"k":"v","k":"w"}})", ""),
                   "duplicate key in the header; got 'k' twice, expected unique names");
  }

  TEST_CASE("every truncation and many corruptions of a valid file are IoErrors, never a crash or a partial load") {
    TempDir dir;
    const std::string good_path = dir / "good.safetensors";
    StateDict sd;
    sd.insert("w", tensor({1, 2, 3, 4, 5, 6}, {2, 3}));
    sd.insert("i", index_tensor({1, 2}));
    save_safetensors(good_path, sd, {{"k", "v"}});
    const std::string good = read_bytes(good_path);
    const std::string path = dir / "bad.safetensors";
    for (std::size_t n = 0; n < good.size(); ++n) {
      CAPTURE(n);
      write_bytes(path, good.substr(0, n));
      CHECK_THROWS_AS(load_safetensors(path), IoError);
    }
    // Byte substitutions: each either still describes a valid file (a changed value, a changed name) or is an
    // IoError; no other exception, no crash (the sanitizer build checks memory safety).
    int rejected = 0;
    for (std::size_t i = 0; i < good.size(); i += 3) {
      for (const char c : {'\0', '\xff', '9', '"', '}', ','}) {
        std::string bad = good;
        bad[i] = c;
        write_bytes(path, bad);
        try {
          (void)load_safetensors(path);
        } catch (const IoError&) {
          ++rejected;
        }
      }
    }
    CHECK(rejected > 0);
  }

  TEST_CASE("save errors leave the existing file intact and no temp file behind") {
    TempDir dir;
    const std::string path = dir / "m.safetensors";
    StateDict good;
    good.insert("w", tensor({1, 2}, {2}));
    save_safetensors(path, good);
    const std::string before = read_bytes(path);

    StateDict undefined;
    undefined.insert("u", Tensor());
    CHECK_THROWS_WITH_AS(save_safetensors(path, undefined),
                         "save_safetensors: tensor 'u' is undefined; got an undefined tensor, expected a defined one",
                         ValueError);
    StateDict reserved;
    reserved.insert("__metadata__", ones({1}));
    CHECK_THROWS_WITH_AS(save_safetensors(path, reserved),
                         "save_safetensors: reserved tensor name; got '__metadata__', expected any other name",
                         ValueError);
    StateDict not_utf8;
    not_utf8.insert("bad\xff", ones({1}));
    CHECK_THROWS_WITH_AS(save_safetensors(path, not_utf8),
                         "save_safetensors: a tensor name or metadata string is not valid UTF-8; got invalid bytes, "
                         "expected UTF-8 text",
                         ValueError);

    const std::string no_dir = dir / "no/such/dir.safetensors";
    CHECK_THROWS_WITH_AS(save_safetensors(no_dir, good),
                         fmt::format("save_safetensors: cannot write '{}'; got No such file or directory (creating the "
                                     "temp file), expected a writable file",
                                     no_dir)
                             .c_str(),
                         IoError);
    // A directory where the file should go: the rename fails and the temp file is removed.
    const std::string is_dir = dir / "subdir";
    fs::create_directory(is_dir);
    CHECK_THROWS_WITH_AS(save_safetensors(is_dir, good),
                         fmt::format("save_safetensors: cannot write '{}'; got Is a directory (renaming the temp file "
                                     "over it), expected a writable file",
                                     is_dir)
                             .c_str(),
                         IoError);
    CHECK(read_bytes(path) == before);
    std::vector<std::string> files = dir.files();
    std::sort(files.begin(), files.end());
    CHECK(files == std::vector<std::string>{"m.safetensors", "subdir"});
  }

  TEST_CASE("a write that fails part-way (file size limit) keeps the old file and removes the temp file") {
    TempDir dir;
    const std::string path = dir / "m.safetensors";
    StateDict small;
    small.insert("w", tensor({1, 2}, {2}));
    save_safetensors(path, small);
    const std::string before = read_bytes(path);
    // In a child: cap the file size below what the save needs, so write() fails with EFBIG mid-file.
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      std::signal(SIGXFSZ, SIG_IGN);
      const rlimit limit{4096, 4096};
      ::setrlimit(RLIMIT_FSIZE, &limit);
      StateDict big;
      big.insert("w", zeros({4096}));
      int code = 1;
      try {
        save_safetensors(path, big);
      } catch (const IoError& e) {
        code = std::string(e.what()).find("got File too large (writing the temp file)") != std::string::npos ? 0 : 2;
      } catch (...) {
        code = 3;
      }
      ::_exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(read_bytes(path) == before);
    CHECK(dir.files() == std::vector<std::string>{"m.safetensors"});
  }
}
