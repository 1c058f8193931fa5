#pragma once
// Typed errors. Every message is one line: `<where>: <what>; got <actual>, expected <expected>`.
// Checks are always on (never compiled out) and throw; nothing in unroll aborts on user error.
#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace unroll {

/// Base of every exception unroll throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
/// Shapes that do not fit an op (broadcasting, matmul inner dims, cat sizes, ...).
class ShapeError : public Error {
 public:
  using Error::Error;
};
/// A dtype an op does not accept, or two dtypes that differ.
class DtypeError : public Error {
 public:
  using Error::Error;
};
/// A bad argument value (negative size, probability outside [0, 1], unknown reduction, ...).
class ValueError : public Error {
 public:
  using Error::Error;
};
/// An index outside its range (select, index_select, embedding, cross_entropy targets).
class IndexError : public Error {
 public:
  using Error::Error;
};
/// Misuse of state: backward through a freed graph, backward from a non-scalar without a seed, ...
class StateError : public Error {
 public:
  using Error::Error;
};
/// A file that cannot be read or written, or whose contents are malformed.
class IoError : public Error {
 public:
  using Error::Error;
};
/// A nan or an infinity where anomaly detection (autograd::DetectAnomaly) or a caller asked for finite values.
class NonFiniteError : public Error {
 public:
  using Error::Error;
};
/// A tensor that does not fit in this machine's memory (the system refused it, or it is larger than RAM and
/// swap together). Its message names the op, the bytes asked for, the shape and the dtype.
class MemoryError : public Error {
 public:
  using Error::Error;
};

namespace detail {
/// The op running on this thread, outermost first (null outside ops): errors raised below an op that cannot know
/// its name (a tensor allocation, a shape too large to count) use it to say where they come from.
inline constinit thread_local const char* tls_op_name = nullptr;

/// Names the op for its lifetime, unless an enclosing op already did (linear calling matmul stays "linear":
/// the name the user wrote). Two thread-local stores: cheap enough for every op.
class OpScope {
 public:
  explicit OpScope(const char* name) : outer_(tls_op_name) {
    if (outer_ == nullptr) tls_op_name = name;
  }
  ~OpScope() { tls_op_name = outer_; }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  const char* outer_;
};
/// The name errors should start with: the running op, else `fallback`.
inline const char* op_name_or(const char* fallback) { return tls_op_name != nullptr ? tls_op_name : fallback; }

template <class E, class... Args>
[[noreturn]] [[gnu::cold]] void throw_error(fmt::format_string<Args...> format, Args&&... args) {
  throw E(fmt::format(format, std::forward<Args>(args)...));
}

/// Inside a catch block: rethrows the exception in flight with `context` put before its message, keeping its
/// type (a ShapeError stays a ShapeError), when it is one of unroll's; any other exception goes on unchanged.
[[noreturn]] [[gnu::cold]] inline void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const ShapeError& e) {
    throw ShapeError(context + e.what());
  } catch (const DtypeError& e) {
    throw DtypeError(context + e.what());
  } catch (const ValueError& e) {
    throw ValueError(context + e.what());
  } catch (const IndexError& e) {
    throw IndexError(context + e.what());
  } catch (const StateError& e) {
    throw StateError(context + e.what());
  } catch (const IoError& e) {
    throw IoError(context + e.what());
  } catch (const MemoryError& e) {
    throw MemoryError(context + e.what());
  } catch (const NonFiniteError& e) {
    throw NonFiniteError(context + e.what());
  } catch (const Error& e) {
    throw Error(context + e.what());
  }
}
}  // namespace detail
}  // namespace unroll

/// UNROLL_CHECK(cond, ShapeError, "matmul: inner dimensions differ; got a={} and b={}", a, b)
/// The message is only formatted when the check fails.
#define UNROLL_CHECK(cond, ErrorType, ...)                             \
  do {                                                                 \
    if (!(cond)) [[unlikely]]                                          \
      ::unroll::detail::throw_error<::unroll::ErrorType>(__VA_ARGS__); \
  } while (0)
