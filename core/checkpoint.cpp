#include "checkpoint.hpp"

#include <bit>
#include <charconv>
#include <cmath>
#include <iterator>
#include <string_view>

#include "safetensors.hpp"

namespace unroll {
namespace {
constexpr std::string_view kFormatKey = "unroll.format";
constexpr std::string_view kStepKey = "unroll.step";
constexpr std::string_view kFormat = "checkpoint-1";
constexpr std::string_view kReserved = "unroll.";
constexpr std::string_view kSections[] = {"model.", "optimizer.", "scheduler.", "extra."};

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// IoError "load_checkpoint: '<path>': <what>" (formatted only on failure).
template <class... Args>
void check(bool ok, const std::string& path, fmt::format_string<Args...> what, Args&&... args) {
  if (!ok) [[unlikely]]
    detail::throw_error<IoError>("load_checkpoint: '{}': {}", path, fmt::format(what, std::forward<Args>(args)...));
}

template <class T>
Tensor scalar(T value) {
  Tensor t = Tensor::empty({}, dtype_of<T>());
  *t.data<T>() = value;
  return t;
}
}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& c) {
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : c.extra) {
    UNROLL_CHECK(!starts_with(key, kReserved), ValueError,
                 "save_checkpoint: extra key uses the reserved prefix 'unroll.'; got '{}', expected another key", key);
    metadata.emplace(key, value);
  }
  metadata.emplace(kFormatKey, kFormat);
  metadata.emplace(kStepKey, std::to_string(c.step));

  StateDict all;
  all.merge(c.model, "model.");
  all.merge(c.optimizer, "optimizer.");
  all.merge(c.scheduler, "scheduler.");
  all.merge(c.extra_tensors, "extra.");
  // The generator's words are u64; safetensors has I64, so store their bits (bit_cast both ways is exact).
  Tensor s = Tensor::empty({4}, Dtype::int64);
  for (std::size_t i = 0; i < 4; ++i) s.data<std::int64_t>()[i] = std::bit_cast<std::int64_t>(c.rng.s[i]);
  all.insert("rng.s", s);
  all.insert("rng.spare_normal", scalar(c.rng.spare_normal));
  all.insert("rng.has_spare", scalar<std::int64_t>(c.rng.has_spare ? 1 : 0));
  detail::save_safetensors("save_checkpoint", path, all, metadata);
}

Checkpoint load_checkpoint(const std::string& path) {
  SafetensorsFile file = detail::load_safetensors("load_checkpoint", path);
  Checkpoint c;
  const auto format = file.metadata.find(std::string(kFormatKey));
  check(format != file.metadata.end(), path, "not an unroll checkpoint; got no '{}' metadata, expected '{}'",
        kFormatKey, kFormat);
  check(format->second == kFormat, path, "unsupported checkpoint format; got '{}', expected '{}'", format->second,
        kFormat);
  const auto step = file.metadata.find(std::string(kStepKey));
  check(step != file.metadata.end(), path, "missing metadata '{}'; got none, expected the step as a decimal integer",
        kStepKey);
  const std::string& text = step->second;
  const auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), c.step);
  check(err == std::errc() && end == text.data() + text.size() && !text.empty(), path,
        "malformed step; got '{}', expected a decimal integer", text);
  for (const auto& [key, value] : file.metadata) {
    if (key == kFormatKey || key == kStepKey) continue;
    check(!starts_with(key, kReserved), path,
          "unexpected metadata key; got '{}', expected only {} and {} under 'unroll.'", key, kFormatKey, kStepKey);
    c.extra.emplace(key, value);
  }

  const Tensor* rng_s = nullptr;
  const Tensor* rng_spare = nullptr;
  const Tensor* rng_has_spare = nullptr;
  StateDict* sections[] = {&c.model, &c.optimizer, &c.scheduler, &c.extra_tensors};
  static_assert(std::size(kSections) == std::size(sections));
  for (const auto& [name, t] : file.tensors) {
    bool placed = false;
    for (std::size_t i = 0; i < std::size(sections) && !placed; ++i)
      if (starts_with(name, kSections[i])) {
        sections[i]->insert(name.substr(kSections[i].size()), t);
        placed = true;
      }
    if (placed) continue;
    if (name == "rng.s")
      rng_s = &t;
    else if (name == "rng.spare_normal")
      rng_spare = &t;
    else if (name == "rng.has_spare")
      rng_has_spare = &t;
    else
      check(false, path,
            "unexpected tensor; got '{}', expected names under model., optimizer., scheduler., extra. or rng.", name);
  }
  const auto expect = [&](const Tensor* t, std::string_view name, Dtype dtype, const Shape& shape) {
    check(t != nullptr, path, "missing tensor; got no '{}', expected {} {}", name, dtype, shape);
    check(t->dtype() == dtype && t->shape() == shape, path,
          "tensor '{}' has the wrong dtype or shape; got {} {}, expected {} {}", name, t->dtype(), t->shape(), dtype,
          shape);
  };
  expect(rng_s, "rng.s", Dtype::int64, Shape{4});
  expect(rng_spare, "rng.spare_normal", Dtype::float64, Shape{});
  expect(rng_has_spare, "rng.has_spare", Dtype::int64, Shape{});
  for (std::size_t i = 0; i < 4; ++i) c.rng.s[i] = std::bit_cast<std::uint64_t>(rng_s->data<std::int64_t>()[i]);
  // A state no Generator can be in would resume a run that silently draws garbage: all-zero xoshiro words are
  // a fixed point (every draw is 0), and Box-Muller's kept value is always finite.
  check(c.rng.s != decltype(c.rng.s){}, path,
        "tensor 'rng.s' is not a generator state; got all zeros, expected at least one non-zero word");
  c.rng.spare_normal = *rng_spare->data<double>();
  const std::int64_t has_spare = *rng_has_spare->data<std::int64_t>();
  check(has_spare == 0 || has_spare == 1, path, "tensor 'rng.has_spare' is not a flag; got {}, expected 0 or 1",
        has_spare);
  c.rng.has_spare = has_spare == 1;
  check(!c.rng.has_spare || std::isfinite(c.rng.spare_normal), path,
        "tensor 'rng.spare_normal' is not a normal draw; got {}, expected a finite number", c.rng.spare_normal);
  return c;
}

}  // namespace unroll
