#pragma once
// Module: the base of layers and cells, with PyTorch's vocabulary. A module registers its parameter and
// buffer members and its child modules by reference; named_parameters() walks them with dotted names
// ("encoder.weight_ih_l0"), in registration order, so state dicts line up with PyTorch's.
//
// Members are registered by address, so a Module cannot be copied or moved: keep modules as members, or
// behind std::unique_ptr (registered tensors likewise: the sequence layers keep theirs in a vector sized once).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/state_dict.hpp"
#include "../core/tensor.hpp"

namespace unroll::nn {

class Module {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  /// Registers the member `param` (a defined floating tensor) as a parameter: it becomes a leaf that requires grad.
  /// ValueError for an empty, dotted or repeated name or an undefined tensor.
  Tensor& register_parameter(std::string name, Tensor& param);
  /// Registers the member `buffer`: saved in state_dict() but not a parameter (no gradient).
  Tensor& register_buffer(std::string name, Tensor& buffer);
  /// Registers a child module; its parameters appear as "<name>.<its names>".
  template <class M>
  M& register_module(std::string name, M& child) {
    add_child(std::move(name), static_cast<Module&>(child));
    return child;
  }

  /// Parameters with dotted names, in registration order (children after this module's own).
  StateDict named_parameters(bool recurse = true) const;
  /// The parameter tensors (handles sharing storage and gradient with the module's members).
  std::vector<Tensor> parameters(bool recurse = true) const;
  /// Buffers with dotted names.
  StateDict named_buffers(bool recurse = true) const;
  /// Direct children with their names.
  const std::vector<std::pair<std::string, Module*>>& named_children() const { return children_; }

  /// Sets training mode here and in every child (dropout is active only in training).
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  /// Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)).
  void zero_grad();

  /// Parameters and buffers by dotted name (handles sharing storage, cut from the graph), PyTorch's order.
  StateDict state_dict() const;
  /// What load_state_dict did not match (PyTorch's missing_keys and unexpected_keys).
  struct LoadResult {
    std::vector<std::string> missing_keys;     ///< the module's names absent from the dict (left unchanged)
    std::vector<std::string> unexpected_keys;  ///< the dict's names the module does not have (ignored)
    bool ok() const { return missing_keys.empty() && unexpected_keys.empty(); }
  };
  /// Copies values into the registered tensors in place (optimizers holding the parameters see them).
  /// float32 <-> float64 converts. Strict: a missing or unexpected name is an error; always: a shape
  /// mismatch (ShapeError) or float/int mismatch (DtypeError). One error lists every problem at once (its
  /// type is the first problem's), with a hint when names differ by a prefix (a sub-module's dict loaded
  /// into the whole model, or the reverse). All or nothing: nothing is written unless every entry checks
  /// out. Non-strict: returns the names that did not match, for the caller to report.
  LoadResult load_state_dict(const StateDict& dict, bool strict = true);
  /// Converts every parameter and floating buffer to `dtype` (parameters become new leaves: build the
  /// optimizer after this, as in PyTorch).
  void to(Dtype dtype);
  /// Total number of parameter elements.
  std::int64_t num_parameters() const;
  /// Debug check for a Tensor member that was never registered, and so is silently neither trained nor
  /// saved: runs `forward` (e.g. one step of the cell) on a tape of its own, without backward, and throws a
  /// StateError listing every tensor requiring grad that it used but that is not one of this module's
  /// parameters (an input marked requires_grad_ counts too). StateError if grad mode is off. It sees only
  /// tensors that require grad: a member created without requires_grad_() (register_parameter is what
  /// usually sets it) is a constant to autograd, indistinguishable from any other constant.
  void check_registered(const std::function<void()>& forward) const;

 private:
  void add_child(std::string name, Module& child);
  void check_new_name(const char* where, const std::string& name) const;
  template <class F>
  void visit(const std::string& prefix, bool recurse, F&& f) const;

  std::vector<std::pair<std::string, Tensor*>> params_;
  std::vector<std::pair<std::string, Tensor*>> buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
  bool training_ = true;
};

/// A numbered list of child modules of one type, named "0", "1", ... in the state dict (PyTorch's
/// nn.ModuleList): register it under a name, then each element's parameters are "<name>.<i>.<its names>".
template <class M>
class ModuleList : public Module {
 public:
  /// Constructs an element in place and registers it as the next child.
  template <class... Args>
  M& emplace_back(Args&&... args) {
    items_.push_back(std::make_unique<M>(std::forward<Args>(args)...));
    return register_module(std::to_string(items_.size() - 1), *items_.back());
  }
  std::size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  M& operator[](std::size_t i) { return *items_.at(i); }
  const M& operator[](std::size_t i) const { return *items_.at(i); }

 private:
  std::vector<std::unique_ptr<M>> items_;
};

}  // namespace unroll::nn
