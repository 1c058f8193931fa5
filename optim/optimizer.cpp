#include "optimizer.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include "../core/format.hpp"

namespace unroll::optim {

namespace detail {

void check_hyper(bool ok, std::string_view where, std::string_view name, double value, std::string_view expected) {
  UNROLL_CHECK(ok, ValueError, "{}: invalid {}; got {}, expected {}", where, name, value, expected);
}

std::int64_t to_int64(double v) {
  constexpr double limit = 9223372036854775808.0;  // 2^63
  if (!(v == v)) return 0;
  if (v >= limit) return std::numeric_limits<std::int64_t>::max();
  if (v < -limit) return std::numeric_limits<std::int64_t>::min();
  return static_cast<std::int64_t>(v);
}

Tensor hyper_tensor(const HyperParam& h) {
  if (h.kind == HyperParam::Kind::real) return full({}, h.value, Dtype::float64);
  const std::int64_t v = to_int64(h.value);
  return index_tensor(std::span<const std::int64_t>(&v, 1), Shape{});
}

double read_hyper(std::string_view where, const StateDict& dict, const std::string& key, HyperParam::Kind kind,
                  std::vector<std::string>& used) {
  const Tensor* t = dict.find(key);
  const Dtype want = kind == HyperParam::Kind::real ? Dtype::float64 : Dtype::int64;
  UNROLL_CHECK(t != nullptr, ValueError,
               "{}::load_state_dict: missing entry '{}'; got a state dict without it, expected every hyper-parameter "
               "of {} (is the dict from another type?)",
               where, key, where);
  UNROLL_CHECK(t->defined(), ValueError,
               "{}::load_state_dict: entry '{}' is undefined; got an undefined tensor, expected a 0-d {} tensor", where,
               key, want);
  UNROLL_CHECK(t->dim() == 0, ValueError, "{}::load_state_dict: entry '{}' has the wrong shape; got {}, expected []",
               where, key, t->shape());
  UNROLL_CHECK(t->dtype() == want, ValueError,
               "{}::load_state_dict: entry '{}' has the wrong dtype; got {}, expected {}", where, key, t->dtype(),
               want);
  used.push_back(key);
  if (kind == HyperParam::Kind::real) return t->item();
  const std::int64_t v = *t->data<std::int64_t>();
  UNROLL_CHECK(kind != HyperParam::Kind::flag || v == 0 || v == 1, ValueError,
               "{}::load_state_dict: entry '{}' is not a flag; got {}, expected 0 or 1", where, key, v);
  return static_cast<double>(v);
}

void check_no_extra(std::string_view where, const StateDict& dict, const std::vector<std::string>& used) {
  if (dict.size() == used.size()) return;  // every read name is in the dict, so these are all of them
  for (const auto& [name, t] : dict)
    UNROLL_CHECK(std::find(used.begin(), used.end(), name) != used.end(), ValueError,
                 "{}::load_state_dict: unexpected entry '{}'; got an entry {} does not have, expected only its own "
                 "entries (is the dict from another type or configuration?)",
                 where, name, where);
}

}  // namespace detail

namespace {

// "state.<i>.<key>" -> i and key; false for other names.
bool parse_state_name(std::string_view name, std::size_t& index, std::string_view& key) {
  constexpr std::string_view prefix = "state.";
  if (name.substr(0, prefix.size()) != prefix) return false;
  name.remove_prefix(prefix.size());
  const auto dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0) return false;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + dot, index);
  if (ec != std::errc() || end != name.data() + dot) return false;
  key = name.substr(dot + 1);
  return true;
}

}  // namespace

Optimizer::Optimizer(std::string name, std::vector<Tensor> params, double lr)
    : name_(std::move(name)), params_(std::move(params)), lr_(lr) {
  UNROLL_CHECK(!params_.empty(), ValueError, "{}: empty parameter list; got 0 parameters, expected at least one",
               name_);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    UNROLL_CHECK(p.defined(), ValueError,
                 "{}: parameter {} is undefined; got an undefined tensor, expected a leaf tensor that requires grad",
                 name_, i);
    UNROLL_CHECK(is_floating(p.dtype()), ValueError,
                 "{}: parameter {} is not floating-point; got {}, expected float32 or float64", name_, i, p.dtype());
    UNROLL_CHECK(p.is_leaf(), ValueError,
                 "{}: parameter {} is not a leaf; got the output of an op, expected a leaf tensor that requires grad",
                 name_, i);
    UNROLL_CHECK(p.requires_grad(), ValueError,
                 "{}: parameter {} does not require grad; got a tensor of shape {} without requires_grad, expected a "
                 "leaf that requires grad (call requires_grad_() before collecting parameters)",
                 name_, i, p.shape());
    // Handles share their gradient record: the same record twice would be updated twice per step.
    for (std::size_t j = 0; j < i; ++j)
      UNROLL_CHECK(params_[j].leaf() != p.leaf(), ValueError,
                   "{}: parameter {} is repeated; got the same tensor as parameter {}, expected distinct parameters",
                   name_, i, j);
  }
  detail::check_hyper(lr_ >= 0, name_, "lr", lr_, "lr >= 0");
  state_.resize(params_.size());
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

void Optimizer::set_lr(double lr) {
  UNROLL_CHECK(lr >= 0, ValueError, "{}::set_lr: invalid lr; got {}, expected lr >= 0", name_, lr);
  lr_ = lr;
}

double Optimizer::default_initial_lr(double lr) {
  if (!initial_lr_) initial_lr_ = lr;
  return *initial_lr_;
}

const Tensor& Optimizer::grad_of(std::size_t i) const {
  const Tensor& p = params_[i];
  const Tensor& g = p.leaf()->grad;
  if (g.defined()) {
    UNROLL_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype(), StateError,
                 "{}::step: gradient of parameter {} does not match it; got {} {}, expected {} {}", name_, i, g.dtype(),
                 g.shape(), p.dtype(), p.shape());
  }
  return g;
}

void Optimizer::make_writable(ParamState& s) {
  for (Tensor& b : s.buffers)
    if (!b.unique_storage()) b = copy_of(b);
}

void Optimizer::start_zeros(std::size_t i, std::size_t n_buffers) {
  ParamState& s = state_[i];
  s.buffers.clear();
  for (std::size_t k = 0; k < n_buffers; ++k) s.buffers.push_back(zeros(params_[i].shape(), params_[i].dtype()));
  s.step = 0;
  s.started = true;
}

StateDict Optimizer::state_dict() const {
  std::vector<double> values{lr_};
  const std::vector<HyperParam> hyper = hyper_params();
  for (const HyperParam& h : hyper) values.push_back(h.value);
  const StateLayout layout = check_hyper_params(values);

  StateDict out;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const ParamState& s = state_[i];
    if (!s.started) continue;
    if (layout.step) {
      out.insert(fmt::format("state.{}.step", i),
                 detail::hyper_tensor({"step", static_cast<double>(s.step), HyperParam::Kind::integer}));
    }
    for (std::size_t k = 0; k < layout.buffers.size(); ++k)
      out.insert(fmt::format("state.{}.{}", i, layout.buffers[k]), s.buffers[k]);
  }
  out.insert("param_groups.0.lr", detail::hyper_tensor({"lr", lr_}));
  for (const HyperParam& h : hyper) out.insert(fmt::format("param_groups.0.{}", h.name), detail::hyper_tensor(h));
  if (initial_lr_) out.insert("param_groups.0.initial_lr", detail::hyper_tensor({"initial_lr", *initial_lr_}));
  std::vector<std::int64_t> indices(params_.size());
  for (std::size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<std::int64_t>(i);
  out.insert("param_groups.0.params", index_tensor(indices, Shape{static_cast<std::int64_t>(indices.size())}));
  return out;
}

void Optimizer::load_state_dict(const StateDict& dict) {
  const std::string& where = name_;
  std::vector<std::string> used;

  // Hyper-parameters first: they decide which state entries must be there.
  std::vector<double> values{detail::read_hyper(where, dict, "param_groups.0.lr", HyperParam::Kind::real, used)};
  detail::check_hyper(values[0] >= 0, where, "lr", values[0], "lr >= 0");
  for (const HyperParam& h : hyper_params())
    values.push_back(detail::read_hyper(where, dict, fmt::format("param_groups.0.{}", h.name), h.kind, used));
  const StateLayout layout = check_hyper_params(values);
  std::optional<double> initial_lr;
  if (dict.contains("param_groups.0.initial_lr"))
    initial_lr = detail::read_hyper(where, dict, "param_groups.0.initial_lr", HyperParam::Kind::real, used);

  const Tensor* indices = dict.find("param_groups.0.params");
  UNROLL_CHECK(indices != nullptr && indices->defined(), ValueError,
               "{}::load_state_dict: missing entry 'param_groups.0.params'; got a state dict without it, expected the "
               "indices of {} parameters",
               where, params_.size());
  UNROLL_CHECK(indices->dim() == 1 && indices->dtype() == Dtype::int64 &&
                   indices->numel() == static_cast<std::int64_t>(params_.size()),
               ValueError,
               "{}::load_state_dict: entry 'param_groups.0.params' does not match the parameters; got {} {}, expected "
               "int64 [{}]",
               where, indices->dtype(), indices->shape(), params_.size());
  used.emplace_back("param_groups.0.params");

  // Per-parameter state, into a new vector that replaces the current one only when everything checked out.
  std::vector<ParamState> state(params_.size());
  for (const auto& [name, t] : dict) {
    std::size_t i = 0;
    std::string_view key;
    if (!parse_state_name(name, i, key) || i >= params_.size()) continue;  // reported as unexpected below
    std::size_t slot = layout.buffers.size();                              // the step
    if (key != "step") {
      slot = 0;
      while (slot < layout.buffers.size() && key != layout.buffers[slot]) ++slot;
      if (slot == layout.buffers.size()) continue;  // unexpected
    } else if (!layout.step) {
      continue;
    }
    const Tensor& p = params_[i];
    ParamState& s = state[i];
    if (s.buffers.empty()) s.buffers.resize(layout.buffers.size());
    s.started = true;
    if (slot == layout.buffers.size()) {
      s.step = detail::to_int64(detail::read_hyper(where, dict, name, HyperParam::Kind::integer, used));
      UNROLL_CHECK(s.step >= 0, ValueError, "{}::load_state_dict: entry '{}' is negative; got {}, expected >= 0", where,
                   name, s.step);
      continue;
    }
    UNROLL_CHECK(t.defined(), ValueError,
                 "{}::load_state_dict: entry '{}' is undefined; got an undefined tensor, expected {} {}", where, name,
                 p.dtype(), p.shape());
    UNROLL_CHECK(t.shape() == p.shape(), ValueError,
                 "{}::load_state_dict: entry '{}' has the wrong shape; got {}, expected {}", where, name, t.shape(),
                 p.shape());
    UNROLL_CHECK(t.dtype() == p.dtype(), ValueError,
                 "{}::load_state_dict: entry '{}' has the wrong dtype; got {}, expected {}", where, name, t.dtype(),
                 p.dtype());
    s.buffers[slot] = t;  // shared with the dict: step() copies before writing (make_writable)
    used.push_back(name);
  }
  detail::check_no_extra(where, dict, used);
  for (std::size_t i = 0; i < state.size(); ++i) {
    const ParamState& s = state[i];
    UNROLL_CHECK(s.started || !layout.eager, ValueError,
                 "{}::load_state_dict: missing state of parameter {}; got no 'state.{}.*' entries, expected them for "
                 "every parameter",
                 where, i, i);
    if (!s.started) continue;
    UNROLL_CHECK(!layout.step || dict.contains(fmt::format("state.{}.step", i)), ValueError,
                 "{}::load_state_dict: missing entry 'state.{}.step'; got other state of parameter {}, expected all of "
                 "it",
                 where, i, i);
    for (std::size_t k = 0; k < layout.buffers.size(); ++k)
      UNROLL_CHECK(s.buffers[k].defined(), ValueError,
                   "{}::load_state_dict: missing entry 'state.{}.{}'; got other state of parameter {}, expected all of "
                   "it",
                   where, i, layout.buffers[k], i);
  }

  // Commit (nothing below throws).
  lr_ = values[0];
  initial_lr_ = initial_lr;
  set_hyper_params(values);
  state_ = std::move(state);
}

}  // namespace unroll::optim
