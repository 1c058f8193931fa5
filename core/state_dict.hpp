#pragma once
// StateDict: named tensors in insertion order — the currency of saving and loading. Module::state_dict(),
// optimizer and schedule state, and checkpoints are all StateDicts; core/safetensors.hpp writes them to
// disk. Names are dotted paths as in PyTorch ("rnn.weight_ih_l0", "state.3.exp_avg").
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "error.hpp"
#include "tensor.hpp"

namespace unroll {

class StateDict {
 public:
  using Entry = std::pair<std::string, Tensor>;

  /// Appends an entry; ValueError if the name is already present.
  void insert(std::string name, Tensor value) {
    UNROLL_CHECK(!contains(name), ValueError, "StateDict::insert: duplicate name; got '{}', expected a new name", name);
    index_.emplace(name, entries_.size());
    entries_.emplace_back(std::move(name), std::move(value));
  }
  /// Sets an entry, appending it if new.
  void set(std::string name, Tensor value) {
    if (Tensor* t = find(name))
      *t = std::move(value);
    else
      insert(std::move(name), std::move(value));
  }
  bool contains(std::string_view name) const { return index_.find(std::string(name)) != index_.end(); }
  /// The entry's tensor, or null.
  const Tensor* find(std::string_view name) const {
    const auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &entries_[it->second].second;
  }
  Tensor* find(std::string_view name) {
    const auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &entries_[it->second].second;
  }
  /// The entry's tensor; ValueError naming it if absent.
  const Tensor& at(std::string_view name) const {
    const Tensor* t = find(name);
    UNROLL_CHECK(t != nullptr, ValueError, "StateDict::at: no entry named '{}'; got {} entries", name, size());
    return *t;
  }
  /// Entries whose names start with `prefix`, with the prefix removed ("optim." -> the optimizer's dict).
  StateDict sub(std::string_view prefix) const {
    StateDict out;
    for (const auto& [name, t] : entries_)
      if (name.size() >= prefix.size() && std::string_view(name).substr(0, prefix.size()) == prefix)
        out.insert(name.substr(prefix.size()), t);
    return out;
  }
  /// Appends every entry of `other` with `prefix` prepended to its name.
  void merge(const StateDict& other, std::string_view prefix = {}) {
    for (const auto& [name, t] : other) insert(std::string(prefix) + name, t);
  }

  std::size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }
  std::vector<Entry>::iterator begin() { return entries_.begin(); }
  std::vector<Entry>::iterator end() { return entries_.end(); }

 private:
  std::vector<Entry> entries_;
  std::unordered_map<std::string, std::size_t> index_;
};

}  // namespace unroll
