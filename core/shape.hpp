#pragma once
// Shape: the sizes of a tensor's dimensions, stored inline (no heap), at most kMaxDims dims.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include <fmt/format.h>

#include "error.hpp"

namespace unroll {

class Shape {
 public:
  static constexpr int kMaxDims = 8;
  /// Element counts above this are refused, so byte sizes can never overflow.
  static constexpr std::int64_t kMaxNumel = std::int64_t{1} << 48;

  Shape() = default;  ///< a 0-d shape (a scalar): numel() == 1
  Shape(std::initializer_list<std::int64_t> sizes) { assign(sizes.begin(), sizes.size()); }
  explicit Shape(std::span<const std::int64_t> sizes) { assign(sizes.data(), sizes.size()); }
  explicit Shape(const std::vector<std::int64_t>& sizes) { assign(sizes.data(), sizes.size()); }

  int dim() const { return rank_; }
  std::int64_t operator[](int d) const { return sizes_[d]; }
  std::int64_t& operator[](int d) { return sizes_[d]; }
  const std::int64_t* begin() const { return sizes_; }
  const std::int64_t* end() const { return sizes_ + rank_; }
  std::int64_t back() const { return sizes_[rank_ - 1]; }

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int d = 0; d < rank_; ++d) n *= sizes_[d];
    return n;
  }
  /// Product of the sizes of dims [from, to).
  std::int64_t numel(int from, int to) const {
    std::int64_t n = 1;
    for (int d = from; d < to; ++d) n *= sizes_[d];
    return n;
  }
  std::vector<std::int64_t> vec() const { return {begin(), end()}; }

  void push_back(std::int64_t s) {
    UNROLL_CHECK(rank_ < kMaxDims, ShapeError, "Shape: too many dimensions; got {}, expected at most {}", rank_ + 1,
                 kMaxDims);
    sizes_[rank_] = s;
    assign(sizes_, static_cast<std::size_t>(rank_ + 1));  // re-validates sizes and the element count
  }
  void insert(int at, std::int64_t s) {
    push_back(0);
    for (int d = rank_ - 1; d > at; --d) sizes_[d] = sizes_[d - 1];
    sizes_[at] = s;
  }
  void erase(int at) {
    for (int d = at; d + 1 < rank_; ++d) sizes_[d] = sizes_[d + 1];
    --rank_;
  }
  /// Dims [from, rank) as a shape.
  Shape tail(int from) const { return Shape(std::span<const std::int64_t>(sizes_ + from, rank_ - from)); }

  friend bool operator==(const Shape& a, const Shape& b) {
    if (a.rank_ != b.rank_) return false;
    for (int d = 0; d < a.rank_; ++d)  // a plain loop: std::equal becomes a memcmp call, too slow here
      if (a.sizes_[d] != b.sizes_[d]) return false;
    return true;
  }

 private:
  void assign(const std::int64_t* s, std::size_t n) {
    UNROLL_CHECK(n <= kMaxDims, ShapeError, "Shape: too many dimensions; got {}, expected at most {}", n, kMaxDims);
    std::int64_t count = 1;
    for (std::size_t i = 0; i < n; ++i) {
      UNROLL_CHECK(s[i] >= 0, ShapeError, "Shape: negative size; got {} at dim {}, expected >= 0", s[i], i);
      UNROLL_CHECK(!__builtin_mul_overflow(count, s[i], &count) && count <= kMaxNumel, ShapeError,
                   "{}: too many elements; got sizes [{}], expected at most 2^48 elements",
                   detail::op_name_or("Shape"), fmt::join(s, s + n, ", "));
      sizes_[i] = s[i];
    }
    rank_ = static_cast<int>(n);
  }

  std::int64_t sizes_[kMaxDims] = {};
  int rank_ = 0;
};

/// Wraps a possibly negative dim index into [0, rank); `where` names the op for the error.
inline int wrap_dim(const char* where, std::int64_t d, int rank) {
  UNROLL_CHECK(d >= -rank && d < rank, IndexError, "{}: dimension out of range; got {}, expected in [{}, {}]", where, d,
               -rank, rank - 1);
  return static_cast<int>(d < 0 ? d + rank : d);
}

/// Whether NumPy broadcasting can combine the two shapes.
bool can_broadcast(const Shape& a, const Shape& b);
/// NumPy broadcasting of two shapes; throws ShapeError naming `where` and both shapes.
Shape broadcast_shapes(const char* where, const Shape& a, const Shape& b);

}  // namespace unroll

template <>
struct fmt::formatter<unroll::Shape> {
  constexpr auto parse(fmt::format_parse_context& ctx) { return ctx.begin(); }
  auto format(const unroll::Shape& s, fmt::format_context& ctx) const {
    return fmt::format_to(ctx.out(), "[{}]", fmt::join(s.begin(), s.end(), ", "));
  }
};
