#include "module.hpp"

#include <algorithm>
#include <cstring>

#include "../autograd/tape.hpp"

namespace unroll::nn {

void Module::check_new_name(const char* where, const std::string& name) const {
  UNROLL_CHECK(!name.empty() && name.find('.') == std::string::npos, ValueError,
               "{}: invalid name; got '{}', expected a non-empty name without '.'", where, name);
  auto taken = [&](const auto& list) {
    return std::any_of(list.begin(), list.end(), [&](const auto& e) { return e.first == name; });
  };
  UNROLL_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), ValueError,
               "{}: name already registered; got '{}', expected a new name", where, name);
}

Tensor& Module::register_parameter(std::string name, Tensor& param) {
  check_new_name("register_parameter", name);
  UNROLL_CHECK(param.defined() && is_floating(param.dtype()), ValueError,
               "register_parameter: '{}' must be a defined floating-point tensor; got {}", name,
               param.defined() ? fmt::format("{}", param.dtype()) : std::string("undefined"));
  UNROLL_CHECK(param.is_leaf(), StateError,
               "register_parameter: '{}' is the output of an op; got a non-leaf, expected a leaf tensor (use detach())",
               name);
  if (!param.requires_grad()) param.requires_grad_();
  params_.emplace_back(std::move(name), &param);
  return param;
}

Tensor& Module::register_buffer(std::string name, Tensor& buffer) {
  check_new_name("register_buffer", name);
  UNROLL_CHECK(buffer.defined(), ValueError, "register_buffer: '{}' must be a defined tensor; got undefined", name);
  buffers_.emplace_back(std::move(name), &buffer);
  return buffer;
}

void Module::add_child(std::string name, Module& child) {
  check_new_name("register_module", name);
  UNROLL_CHECK(&child != this, ValueError, "register_module: a module cannot contain itself; got '{}'", name);
  children_.emplace_back(std::move(name), &child);
}

// f(dotted_name, tensor*, is_parameter) over this module then its children, depth first.
template <class F>
void Module::visit(const std::string& prefix, bool recurse, F&& f) const {
  for (const auto& [name, t] : params_) f(prefix + name, t, true);
  for (const auto& [name, t] : buffers_) f(prefix + name, t, false);
  if (recurse)
    for (const auto& [name, m] : children_) m->visit(prefix + name + ".", true, f);
}

StateDict Module::named_parameters(bool recurse) const {
  StateDict out;
  visit("", recurse, [&](const std::string& name, Tensor* t, bool is_param) {
    if (is_param) out.insert(name, *t);
  });
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (const auto& [name, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

StateDict Module::named_buffers(bool recurse) const {
  StateDict out;
  visit("", recurse, [&](const std::string& name, Tensor* t, bool is_param) {
    if (!is_param) out.insert(name, *t);
  });
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, m] : children_) m->train(on);
}

void Module::zero_grad() {
  visit("", true, [](const std::string&, Tensor* t, bool is_param) {
    if (is_param) t->zero_grad();
  });
}

StateDict Module::state_dict() const {
  StateDict out;
  visit("", true, [&](const std::string& name, Tensor* t, bool) { out.insert(name, t->detach()); });
  return out;
}

namespace {
// One entry that does not match, as load_state_dict reports it.
struct LoadProblem {
  enum Kind { shape, dtype, missing, unexpected } kind;
  std::string alone;    // the whole message when it is the only problem
  std::string in_list;  // its short form among several
};

// A hint for names that differ by a leading prefix: a sub-module's dict given to the whole model (the
// dict lacks the prefix) or the whole model's dict given to a sub-module (the dict has one too many).
std::string prefix_hint(const std::vector<std::string>& missing, const std::vector<std::string>& unexpected) {
  auto ends_with_part = [](const std::string& longer, const std::string& shorter) {
    return longer.size() > shorter.size() &&
           longer.compare(longer.size() - shorter.size(), shorter.size(), shorter) == 0 &&
           longer[longer.size() - shorter.size() - 1] == '.';
  };
  for (const std::string& m : missing)
    for (const std::string& u : unexpected) {
      if (ends_with_part(u, m))
        return fmt::format("; found '{}' for '{}': load the sub-dict with StateDict::sub(\"{}\")", u, m,
                           u.substr(0, u.size() - m.size()));
      if (ends_with_part(m, u))
        return fmt::format(
            "; found '{}' for '{}': the dict lacks the prefix \"{}\" (add it with StateDict::merge(dict, \"{}\"))", u,
            m, m.substr(0, m.size() - u.size()), m.substr(0, m.size() - u.size()));
    }
  return {};
}

[[noreturn]] void throw_load_problems(const std::vector<LoadProblem>& problems, const std::string& hint, bool strict) {
  std::string message;
  if (problems.size() == 1) {
    message = "load_state_dict: " + problems[0].alone + hint;
  } else {
    constexpr std::size_t kListed = 8;  // one line stays readable
    message = fmt::format("load_state_dict: {} entries do not match; got ", problems.size());
    for (std::size_t i = 0; i < std::min(problems.size(), kListed); ++i)
      message += (i ? ", " : "") + problems[i].in_list;
    if (problems.size() > kListed) message += fmt::format(" and {} more", problems.size() - kListed);
    message += strict ? ", expected every parameter and buffer with its shape and kind, and nothing else"
                      : ", expected the entries present to match in shape and kind";
    message += hint;
  }
  switch (problems[0].kind) {
    case LoadProblem::shape:
      throw ShapeError(message);
    case LoadProblem::dtype:
      throw DtypeError(message);
    default:
      throw ValueError(message);
  }
}
}  // namespace

Module::LoadResult Module::load_state_dict(const StateDict& dict, bool strict) {
  // Check everything first, then write: a failed load leaves the module untouched.
  std::vector<std::pair<Tensor*, const Tensor*>> plan;
  std::vector<std::string> names;
  std::vector<LoadProblem> problems;
  LoadResult result;
  visit("", true, [&](const std::string& name, Tensor* t, bool) {
    names.push_back(name);
    const Tensor* src = dict.find(name);
    if (src == nullptr) {
      result.missing_keys.push_back(name);
      return;
    }
    if (!src->defined() || src->shape() != t->shape()) {
      const std::string got = src->defined() ? fmt::format("{}", src->shape()) : std::string("undefined");
      problems.push_back({LoadProblem::shape,
                          fmt::format("shape mismatch for '{}'; got {}, expected {}", name, got, t->shape()),
                          fmt::format("shape mismatch for '{}' ({}, expected {})", name, got, t->shape())});
    } else if (is_floating(src->dtype()) != is_floating(t->dtype())) {
      problems.push_back({LoadProblem::dtype,
                          fmt::format("dtype mismatch for '{}'; got {}, expected {}", name, src->dtype(), t->dtype()),
                          fmt::format("dtype mismatch for '{}' ({}, expected {})", name, src->dtype(), t->dtype())});
    } else {
      plan.emplace_back(t, src);
    }
  });
  for (const auto& [name, t] : dict)
    if (std::find(names.begin(), names.end(), name) == names.end()) result.unexpected_keys.push_back(name);
  if (strict) {
    for (const std::string& name : result.missing_keys)
      problems.push_back({LoadProblem::missing,
                          fmt::format("missing entry; got no '{}', expected every parameter and buffer", name),
                          fmt::format("no '{}'", name)});
    for (const std::string& name : result.unexpected_keys)
      problems.push_back(
          {LoadProblem::unexpected,
           fmt::format("unexpected entry; got '{}', expected only the module's parameters and buffers", name),
           fmt::format("unexpected '{}'", name)});
  }
  if (!problems.empty())
    throw_load_problems(problems, strict ? prefix_hint(result.missing_keys, result.unexpected_keys) : std::string(),
                        strict);
  NoGradGuard no_grad;
  for (auto [dst, src] : plan) {
    const Tensor value = src->dtype() == dst->dtype() ? *src : convert(*src, dst->dtype());
    if (value.same_data(*dst)) continue;
    std::memcpy(dst->raw(), value.raw(), static_cast<std::size_t>(dst->numel()) * dtype_size(dst->dtype()));
  }
  return result;
}

void Module::to(Dtype dtype) {
  UNROLL_CHECK(is_floating(dtype), DtypeError,
               "Module::to: parameters must be floating-point; got {}, expected float32 or float64", dtype);
  visit("", true, [&](const std::string&, Tensor* t, bool is_param) {
    if (t->dtype() == dtype || !is_floating(t->dtype())) return;
    Tensor converted = convert(t->detach(), dtype);
    if (is_param) converted.requires_grad_();
    *t = std::move(converted);
  });
}

void Module::check_registered(const std::function<void()>& forward) const {
  UNROLL_CHECK(autograd::grad_enabled(), StateError,
               "Module::check_registered: grad mode is off; got a call inside NoGradGuard, expected grad mode on (the "
               "check reads the tape the forward records)");
  std::vector<const unroll::detail::LeafMeta*> registered;
  for (const Tensor& p : parameters()) registered.push_back(p.leaf());
  autograd::Tape tape;  // this scope's own: the check sees only what forward records, and frees it after
  forward();
  std::vector<std::string> strays;
  for (const unroll::detail::LeafMeta* leaf : tape.leaves())
    if (std::find(registered.begin(), registered.end(), leaf) == registered.end())
      strays.push_back(fmt::format("{} {}", leaf->shape, leaf->dtype));
  UNROLL_CHECK(
      strays.empty(), StateError,
      "Module::check_registered: the forward used {} tensor(s) that require grad but are not registered; got "
      "{}, expected every trained tensor registered with register_parameter (or an input marked requires_grad_)",
      strays.size(), fmt::join(strays, ", "));
}

std::int64_t Module::num_parameters() const {
  std::int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

}  // namespace unroll::nn
