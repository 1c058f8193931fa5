#pragma once
// Module: the base of layers and cells, with PyTorch's vocabulary. A module registers its parameter and
// buffer members and its child modules by reference; named_parameters() walks them with dotted names
// ("encoder.weight_ih_l0"), in registration order, so state dicts line up with PyTorch's.
//
// Members are registered by address, so a Module cannot be copied or moved: keep modules as members, or
// behind std::unique_ptr (as the sequence layers keep their per-layer parameters).
#include <cstdint>
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
  /// Copies values into the registered tensors in place (optimizers holding the parameters see them).
  /// Strict: a missing or unexpected name is a ValueError naming it; always: a shape mismatch is a ShapeError
  /// and a float/int mismatch a DtypeError naming the entry. float32 <-> float64 converts. All or nothing:
  /// nothing is written unless every entry checks out.
  void load_state_dict(const StateDict& dict, bool strict = true);
  /// Converts every parameter and floating buffer to `dtype` (parameters become new leaves: build the
  /// optimizer after this, as in PyTorch).
  void to(Dtype dtype);
  /// Total number of parameter elements.
  std::int64_t num_parameters() const;

 private:
  void add_child(std::string name, Module& child);
  void check_new_name(const char* where, const std::string& name) const;
  template <class F> void visit(const std::string& prefix, bool recurse, F&& f) const;

  std::vector<std::pair<std::string, Tensor*>> params_;
  std::vector<std::pair<std::string, Tensor*>> buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
  bool training_ = true;
};

}  // namespace unroll::nn
