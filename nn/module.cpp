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
               "register_parameter: '{}' is the output of an op; got a non-leaf, expected a leaf tensor (use detach())", name);
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

void Module::load_state_dict(const StateDict& dict, bool strict) {
  // Check everything first, then write: a failed load leaves the module untouched.
  std::vector<std::pair<Tensor*, const Tensor*>> plan;
  std::vector<std::string> names;
  visit("", true, [&](const std::string& name, Tensor* t, bool) {
    names.push_back(name);
    const Tensor* src = dict.find(name);
    if (src == nullptr) {
      UNROLL_CHECK(!strict, ValueError, "load_state_dict: missing entry; got no '{}', expected every parameter and buffer",
                   name);
      return;
    }
    UNROLL_CHECK(src->defined() && src->shape() == t->shape(), ShapeError,
                 "load_state_dict: shape mismatch for '{}'; got {}, expected {}", name,
                 src->defined() ? fmt::format("{}", src->shape()) : std::string("undefined"), t->shape());
    UNROLL_CHECK(is_floating(src->dtype()) == is_floating(t->dtype()), DtypeError,
                 "load_state_dict: dtype mismatch for '{}'; got {}, expected {}", name, src->dtype(), t->dtype());
    plan.emplace_back(t, src);
  });
  if (strict)
    for (const auto& [name, t] : dict)
      UNROLL_CHECK(std::find(names.begin(), names.end(), name) != names.end(), ValueError,
                   "load_state_dict: unexpected entry; got '{}', expected only the module's parameters and buffers", name);
  NoGradGuard no_grad;
  for (auto [dst, src] : plan) {
    const Tensor value = src->dtype() == dst->dtype() ? *src : convert(*src, dst->dtype());
    if (value.same_data(*dst)) continue;
    std::memcpy(dst->raw(), value.raw(), static_cast<std::size_t>(dst->numel()) * dtype_size(dst->dtype()));
  }
}

void Module::to(Dtype dtype) {
  UNROLL_CHECK(is_floating(dtype), DtypeError, "Module::to: parameters must be floating-point; got {}, expected float32 or float64",
               dtype);
  visit("", true, [&](const std::string&, Tensor* t, bool is_param) {
    if (t->dtype() == dtype || !is_floating(t->dtype())) return;
    Tensor converted = convert(t->detach(), dtype);
    if (is_param) converted.requires_grad_();
    *t = std::move(converted);
  });
}

std::int64_t Module::num_parameters() const {
  std::int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

}  // namespace unroll::nn
