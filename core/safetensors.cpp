#include "safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace unroll {
namespace {
// Tensor bytes go to and from the file unchanged, which is only right on a little-endian host.
static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

// ordered_json keeps the header's key order: we write tensors in the dict's order and read them back so.
using Json = nlohmann::ordered_json;

constexpr std::string_view kMetadataKey = "__metadata__";

std::string_view safetensors_dtype(Dtype d) {
  switch (d) {
    case Dtype::float32:
      return "F32";
    case Dtype::float64:
      return "F64";
    case Dtype::int64:
      return "I64";
  }
  return "?";
}
std::optional<Dtype> dtype_from_safetensors(std::string_view s) {
  if (s == "F32") return Dtype::float32;
  if (s == "F64") return Dtype::float64;
  if (s == "I64") return Dtype::int64;
  return std::nullopt;
}

std::string errno_text(int err) { return std::strerror(err); }

// ---- atomic write ----

struct Piece {
  const void* data;
  std::size_t size;
};

// Closes a descriptor on scope exit unless it was closed explicitly (close errors matter on the write path).
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

bool write_all(int fd, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// Writes `pieces` to a temp file beside `path`, fsyncs it, renames it over `path` and fsyncs the directory, so
// `path` holds either the old contents or all of the new ones, even if the process dies or the machine loses
// power at any point. The temp name carries the pid and a per-process counter so concurrent writers (processes
// or threads) never share one.
void write_atomically(const char* where, const std::string& path, std::span<const Piece> pieces) {
  static std::atomic<std::uint64_t> counter{0};
  const std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter.fetch_add(1));
  const auto fail = [&](const char* step, int err, bool remove_tmp) {
    if (remove_tmp) ::unlink(tmp.c_str());
    detail::throw_error<IoError>("{}: cannot write '{}'; got {} ({}), expected a writable file", where, path,
                                 errno_text(err), step);
  };

  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
  if (fd.get() < 0) fail("creating the temp file", errno, false);
  for (const Piece& piece : pieces)
    if (!write_all(fd.get(), piece.data, piece.size)) fail("writing the temp file", errno, true);
  if (::fsync(fd.get()) != 0) fail("fsync of the temp file", errno, true);
  if (fd.close() != 0) fail("closing the temp file", errno, true);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("renaming the temp file over it", errno, true);

  // The rename is only durable once the directory entry is on disk. Some filesystems cannot fsync a
  // directory (EINVAL): the file itself is complete and in place, so that is not an error.
  // (Built as a fresh string rather than assigning "." to an empty one: GCC 12 -O2 reports a false
  // -Wrestrict on the latter.)
  const std::string parent = std::filesystem::path(path).parent_path().string();
  const std::string dir = parent.empty() ? std::string(".") : parent;
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0) fail("opening the directory to fsync it", errno, false);
  if (::fsync(dfd.get()) != 0 && errno != EINVAL) fail("fsync of the directory", errno, false);
}

// ---- reading ----

// A JSON value in an error message: compact, and cut short so a huge array cannot flood the message.
std::string brief(const Json& j) {
  std::string s = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

struct Entry {
  std::string name;
  Dtype dtype;
  Shape shape;
  std::uint64_t begin, end;
};

class Reader {
 public:
  Reader(const char* where, const std::string& path)
      : where_(where), path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_.get() < 0) fail_errno("cannot open the file", errno);
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) fail_errno("cannot stat the file", errno);
    check(S_ISREG(st.st_mode), "not a regular file; got mode {:o}, expected a regular file", st.st_mode & S_IFMT);
    file_size_ = static_cast<std::uint64_t>(st.st_size);
  }

  SafetensorsFile read() {
    check(file_size_ >= 8, "file too short for a safetensors header; got {} bytes, expected at least 8", file_size_);
    std::array<unsigned char, 8> size_bytes{};
    read_at(size_bytes.data(), 8, 0);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | size_bytes[static_cast<std::size_t>(i)];
    check(n <= file_size_ - 8, "header length out of range; got {} bytes, expected at most {} (file size {} - 8)", n,
          file_size_ - 8, file_size_);
    std::string text(n, '\0');
    read_at(text.data(), n, 8);
    data_start_ = 8 + n;
    buffer_size_ = file_size_ - data_start_;

    SafetensorsFile out;
    std::vector<Entry> entries = parse_header(text, out.metadata);
    // The buffer must be exactly the tensors back to back: anything else is a damaged or foreign file.
    std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::uint64_t expected = 0;
    const Entry* prev = nullptr;
    for (const Entry& e : entries) {
      if (prev != nullptr)
        check(e.begin >= expected,
              "tensors '{}' and '{}' overlap; got '{}' at [{}, {}], expected it to start at {} where '{}' ends",
              prev->name, e.name, e.name, e.begin, e.end, expected, prev->name);
      check(e.begin <= expected, "gap in the buffer before tensor '{}'; got it at [{}, {}], expected it to start at {}",
            e.name, e.begin, e.end, expected);
      expected = e.end;
      prev = &e;
    }
    check(expected == buffer_size_, "trailing bytes after the last tensor; got a buffer of {} bytes, expected {}",
          buffer_size_, expected);

    for (const Entry& e : entries) {
      Tensor t = Tensor::empty(e.shape, e.dtype);
      read_at(t.raw(), e.end - e.begin, data_start_ + e.begin);
      out.tensors.insert(e.name, std::move(t));
    }
    return out;
  }

 private:
  template <class... Args>
  void check(bool ok, fmt::format_string<Args...> what, Args&&... args) const {
    if (!ok) [[unlikely]]
      detail::throw_error<IoError>("{}: '{}': {}", where_, path_, fmt::format(what, std::forward<Args>(args)...));
  }
  [[noreturn]] void fail_errno(const char* what, int err) const {
    detail::throw_error<IoError>("{}: '{}': {}; got {}, expected a readable safetensors file", where_, path_, what,
                                 errno_text(err));
  }

  void read_at(void* dst, std::uint64_t size, std::uint64_t offset) {
    char* p = static_cast<char*>(dst);
    while (size > 0) {
      const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(size, std::uint64_t{1} << 30));
      const ssize_t n = ::pread(fd_.get(), p, chunk, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        fail_errno("cannot read the file", errno);
      }
      check(n > 0, "file shrank while reading; got end of file at byte {}, expected {} bytes", offset, file_size_);
      p += n;
      size -= static_cast<std::uint64_t>(n);
      offset += static_cast<std::uint64_t>(n);
    }
  }

  std::vector<Entry> parse_header(const std::string& text, std::map<std::string, std::string>& metadata) {
    // nlohmann keeps the last of two equal keys; the parser callback sees every key, so duplicates (at any
    // depth) are caught instead of silently dropping a tensor.
    // The nesting depth is bounded too: a header nests three deep ({"name": {"shape": [...]}}), and nlohmann's
    // dump() (the JSON quoted in error messages) recurses, so a file of 100,000 '[' would overflow the stack.
    // At a container's start nlohmann passes the number of containers around it (0 for the header object).
    constexpr int kMaxDepth = 16;
    std::vector<std::set<std::string>> open_objects;
    std::string duplicate;
    const Json::parser_callback_t on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
      if (event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start)
        check(depth < kMaxDepth,
              "header nests too deeply; got more than {} levels of objects and arrays, expected at most {}", kMaxDepth,
              kMaxDepth);
      switch (event) {
        case Json::parse_event_t::object_start:
          open_objects.emplace_back();
          break;
        case Json::parse_event_t::object_end:
          open_objects.pop_back();
          break;
        case Json::parse_event_t::key:
          if (!open_objects.back().insert(parsed.get<std::string>()).second && duplicate.empty())
            duplicate = parsed.get<std::string>();
          break;
        default:
          break;
      }
      return true;
    };
    Json header;
    try {
      header = Json::parse(text, on_event);
    } catch (const Json::exception& e) {  // parse_error, and out_of_range for a number such as 1e999
      std::string_view why = e.what();
      if (const auto at = why.find("] "); at != std::string_view::npos) why.remove_prefix(at + 2);
      check(false, "header is not valid JSON; got {}, expected a JSON object", why);
    }
    check(header.is_object(), "header is not a JSON object; got {}, expected an object", header.type_name());
    check(duplicate.empty(), "duplicate key in the header; got '{}' twice, expected unique names", duplicate);

    std::vector<Entry> entries;
    for (const auto& [name, value] : header.items()) {
      if (name == kMetadataKey) {
        check(value.is_object(), "__metadata__ is not an object; got {}, expected an object of strings", brief(value));
        for (const auto& [k, v] : value.items()) {
          check(v.is_string(), "metadata value for '{}' is not a string; got {}, expected a string", k, brief(v));
          metadata.emplace(k, v.get<std::string>());
        }
        continue;
      }
      entries.push_back(parse_entry(name, value));
    }
    return entries;
  }

  Entry parse_entry(const std::string& name, const Json& j) {
    check(j.is_object(), "tensor '{}' is not an object; got {}, expected an object with dtype, shape and data_offsets",
          name, brief(j));
    for (const auto& [key, value] : j.items())
      check(key == "dtype" || key == "shape" || key == "data_offsets",
            "tensor '{}' has an unexpected key; got '{}', expected only dtype, shape and data_offsets", name, key);
    for (const char* key : {"dtype", "shape", "data_offsets"})
      check(j.contains(key), "tensor '{}' has no {}; got {}, expected dtype, shape and data_offsets", name, key,
            brief(j));

    Entry e;
    e.name = name;
    const Json& dtype = j["dtype"];
    check(dtype.is_string(), "tensor '{}' has a dtype that is not a string; got {}, expected F32, F64 or I64", name,
          brief(dtype));
    const auto d = dtype_from_safetensors(dtype.get<std::string>());
    check(d.has_value(), "tensor '{}' has an unsupported dtype; got '{}', expected F32, F64 or I64", name,
          dtype.get<std::string>());
    e.dtype = *d;

    const Json& shape = j["shape"];
    check(shape.is_array(), "tensor '{}' has a shape that is not an array; got {}, expected an array of sizes", name,
          brief(shape));
    check(shape.size() <= static_cast<std::size_t>(Shape::kMaxDims),
          "tensor '{}' has too many dimensions; got {}, expected at most {}", name, shape.size(), Shape::kMaxDims);
    std::vector<std::int64_t> sizes;
    std::uint64_t numel = 1;
    for (const Json& s : shape) {
      check(s.is_number_integer(),
            "tensor '{}' has a shape entry that is not an integer; got shape {}, expected integers", name,
            brief(shape));
      check(s.is_number_unsigned(), "tensor '{}' has a negative size; got shape {}, expected sizes >= 0", name,
            brief(shape));
      const std::uint64_t size = s.get<std::uint64_t>();
      check(!__builtin_mul_overflow(numel, size, &numel) && numel <= static_cast<std::uint64_t>(Shape::kMaxNumel),
            "tensor '{}' has too many elements; got shape {}, expected at most 2^48 elements", name, brief(shape));
      // Bounded on its own as well: after a 0 the element count stays 0 whatever follows, and a size past 2^63
      // would turn negative in the Shape (a ShapeError without the file's name).
      check(size <= static_cast<std::uint64_t>(Shape::kMaxNumel),
            "tensor '{}' has a size out of range; got shape {}, expected sizes at most 2^48", name, brief(shape));
      sizes.push_back(static_cast<std::int64_t>(size));
    }
    e.shape = Shape(sizes);

    const Json& offsets = j["data_offsets"];
    check(
        offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() && offsets[1].is_number_unsigned(),
        "tensor '{}' has malformed data_offsets; got {}, expected two integers [begin, end] >= 0", name,
        brief(offsets));
    e.begin = offsets[0].get<std::uint64_t>();
    e.end = offsets[1].get<std::uint64_t>();
    check(e.begin <= e.end, "tensor '{}' has reversed data_offsets; got [{}, {}], expected begin <= end", name, e.begin,
          e.end);
    check(e.end <= buffer_size_,
          "tensor '{}' has data_offsets beyond the buffer; got [{}, {}], expected end <= {} (buffer size)", name,
          e.begin, e.end, buffer_size_);
    const std::uint64_t bytes = numel * dtype_size(e.dtype);  // numel <= 2^48: cannot overflow
    check(e.end - e.begin == bytes,
          "tensor '{}' byte size does not match its shape and dtype; got {} bytes, expected {} for {} {}", name,
          e.end - e.begin, bytes, safetensors_dtype(e.dtype), e.shape);
    return e;
  }

  const char* where_;
  const std::string& path_;
  Fd fd_;
  std::uint64_t file_size_ = 0;
  std::uint64_t data_start_ = 0;
  std::uint64_t buffer_size_ = 0;
};

}  // namespace

namespace detail {

void save_safetensors(const char* where, const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // The header as the safetensors library writes it: __metadata__ first, compact JSON, space padding.
  Json header = Json::object();
  if (!metadata.empty()) {
    Json m = Json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header[std::string(kMetadataKey)] = std::move(m);
  }
  std::vector<Piece> pieces;
  pieces.reserve(tensors.size() + 2);
  pieces.push_back({nullptr, 8});  // the header size, filled in below
  pieces.push_back({nullptr, 0});  // the header
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    UNROLL_CHECK(name != kMetadataKey, ValueError, "{}: reserved tensor name; got '{}', expected any other name", where,
                 name);
    UNROLL_CHECK(t.defined(), ValueError,
                 "{}: tensor '{}' is undefined; got an undefined tensor, expected a defined one", where, name);
    const std::uint64_t bytes = static_cast<std::uint64_t>(t.numel()) * dtype_size(t.dtype());
    header[name] = Json{{"dtype", std::string(safetensors_dtype(t.dtype()))},
                        {"shape", t.shape().vec()},
                        {"data_offsets", Json::array({offset, offset + bytes})}};
    offset += bytes;
    if (bytes > 0) pieces.push_back({t.raw(), static_cast<std::size_t>(bytes)});
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const Json::type_error&) {  // the only way dump() fails: a string that is not UTF-8
    detail::throw_error<ValueError>(
        "{}: a tensor name or metadata string is not valid UTF-8; got invalid bytes, "
        "expected UTF-8 text",
        where);
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the buffer 8-byte aligned for readers that map the file
  std::array<unsigned char, 8> size_bytes{};
  for (std::size_t i = 0; i < 8; ++i) size_bytes[i] = static_cast<unsigned char>(text.size() >> (8 * i));
  pieces[0].data = size_bytes.data();
  pieces[1] = {text.data(), text.size()};
  write_atomically(where, path, pieces);
}

SafetensorsFile load_safetensors(const char* where, const std::string& path) { return Reader(where, path).read(); }

}  // namespace detail

void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata) {
  detail::save_safetensors("save_safetensors", path, tensors, metadata);
}

SafetensorsFile load_safetensors(const std::string& path) { return detail::load_safetensors("load_safetensors", path); }

}  // namespace unroll
