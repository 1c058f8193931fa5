#include "tape.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "../core/denormal.hpp"
#include "../core/kernels.hpp"

namespace unroll::autograd {
constinit thread_local bool tls_grad_mode = true;
constinit thread_local Tape* tls_active_tape = nullptr;

namespace {
std::atomic<std::uint64_t> next_key{1};
std::uint64_t fresh_key() { return next_key.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

NoGradGuard::NoGradGuard() : prev_(tls_grad_mode) { tls_grad_mode = false; }
NoGradGuard::~NoGradGuard() { tls_grad_mode = prev_; }
EnableGradGuard::EnableGradGuard() : prev_(tls_grad_mode) { tls_grad_mode = true; }
EnableGradGuard::~EnableGradGuard() { tls_grad_mode = prev_; }

Tape::Tape() : key_(fresh_key()), prev_(&current()) { tls_active_tape = this; }
Tape::Tape(DefaultTag) : key_(fresh_key()), is_default_(true) {}
Tape::~Tape() {
  clear();
  if (is_default_) return;
  // Unlink this scope from the thread's stack, even when scopes end out of order.
  Tape*& active = tls_active_tape;
  if (active == this) {
    active = prev_;
    return;
  }
  for (Tape* t = active; t != nullptr; t = t->prev_)
    if (t->prev_ == this) {
      t->prev_ = prev_;
      break;
    }
}

Tape& Tape::default_tape() {
  thread_local Tape tape{DefaultTag{}};
  tls_active_tape = &tape;
  return tape;
}

void* Tape::arena_alloc_slow(std::size_t bytes, std::size_t align) {
  for (;;) {
    if (block_ < blocks_.size()) {
      const std::size_t start = (used_ + align - 1) / align * align;
      if (start + bytes <= kBlockBytes) {
        used_ = start + bytes;
        return blocks_[block_].get() + start;
      }
      ++block_;
      used_ = 0;
      continue;
    }
    UNROLL_CHECK(bytes + align <= kBlockBytes && align <= kArenaAlign, ValueError,
                 "record: backward closure too large; got {} bytes aligned to {}, expected at most {} aligned to {}",
                 bytes, align, kBlockBytes - kArenaAlign, kArenaAlign);
    blocks_.emplace_back(static_cast<std::byte*>(::operator new[](kBlockBytes, std::align_val_t{kArenaAlign})));
  }
}

namespace {
template <class V>
void reserve_more(V& v, std::size_t extra) {
  if (v.size() + extra > v.capacity()) v.reserve(std::max(2 * v.capacity(), v.size() + extra));
}
}  // namespace

void Tape::append_node(const char* name, void (*run)(void*, GradSink&), void (*destroy)(void*), void* closure,
                       std::span<const Tensor* const> inputs, std::span<Tensor* const> outputs) noexcept {
  const auto node = static_cast<std::uint32_t>(nodes_.size());
  nodes_.push_back(Node{name, run, destroy, closure, static_cast<std::uint32_t>(inputs_.size()),
                        static_cast<std::uint32_t>(inputs.size()), static_cast<std::uint32_t>(slots_.size()),
                        static_cast<std::uint32_t>(outputs.size())});
  for (const Tensor* t : inputs) {
    detail::LeafMeta* leaf = t->leaf();
    if (leaf != nullptr && leaf->tape_mark.load(std::memory_order_relaxed) != key_) {
      detail::retain(leaf);
      leaf->tape_mark.store(key_, std::memory_order_relaxed);
      held_leaves_.push_back(leaf);
    }
    inputs_.push_back(InputRef{leaf, t->tape_key(), t->slot(), t->requires_grad()});
  }
  for (Tensor* t : outputs) {
    const auto slot = static_cast<std::uint32_t>(slots_.size());
    slots_.emplace_back(t->shape(), t->dtype(), node);
    detail::set_tape_ref(*t, key_, slot);
  }
}

void Tape::grow(std::size_t n_inputs, std::size_t n_outputs) {
  reserve_more(nodes_, 1);
  reserve_more(inputs_, n_inputs);
  reserve_more(slots_, n_outputs);
  reserve_more(held_leaves_, n_inputs);
}

void Tape::release_node(Node& n) {
  if (n.closure != nullptr) {
    if (n.destroy) n.destroy(n.closure);
    n.closure = nullptr;
  }
  for (std::uint32_t s = n.out_begin; s < n.out_begin + n.out_count && s < grads_.size(); ++s) grads_[s].reset();
}

void Tape::clear() { clear_from(0); }

void Tape::clear_from(std::size_t from) {
  deferred_.drop();
  for (std::size_t i = nodes_.size(); i-- > from;) release_node(nodes_[i]);
  nodes_.clear();
  inputs_.clear();
  slots_.clear();
  for (detail::LeafMeta* leaf : held_leaves_) detail::release(leaf);
  held_leaves_.clear();
  where_.clear();
  // grads_ keeps its (now all undefined) entries: re-growing it each backward zero-filled ~120 bytes per
  // slot, a visible cost for a small recurrent step.
  block_ = 0;
  used_ = 0;
  key_ = fresh_key();
}

namespace {
// dst += g, never writing through storage that someone else holds (another slot, a saved tensor, a handle
// the user kept): then the sum goes to a new buffer. An undefined dst simply takes g.
void accumulate_into(Tensor& dst, Tensor g) {
  if (!dst.defined()) {
    dst = std::move(g);
  } else if (dst.unique_storage()) {
    detail::accumulate(dst, g);
  } else {
    Tensor sum = copy_of(dst);
    detail::accumulate(sum, g);
    dst = std::move(sum);
  }
}
// A leaf's .grad is the user's to modify in place (optimizers, clipping), so it never starts out sharing
// storage with a gradient the tape still holds.
void accumulate_leaf(detail::LeafMeta& leaf, Tensor g) {
  if (!leaf.grad.defined() && !g.unique_storage()) g = copy_of(g);
  accumulate_into(leaf.grad, std::move(g));
}
// A leaf's gradient from this tape: into its .grad, or held aside when the tape collects them (the
// copy-before-sharing rule of accumulate_leaf is then applied by LeafGrads::apply()).
void give_leaf(LeafGrads* collect, detail::LeafMeta& leaf, Tensor g) {
  if (collect)
    accumulate_into(collect->slot(leaf), std::move(g));
  else
    accumulate_leaf(leaf, std::move(g));
}
}  // namespace

// ---- LeafGrads ----
Tensor& LeafGrads::slot(detail::LeafMeta& leaf) {
  auto [it, inserted] = index_.try_emplace(&leaf, leaves_.size());
  if (inserted) {
    try {
      reserve_more(leaves_, 1);  // so that the push_back below cannot throw
      grads_.emplace_back();
    } catch (...) {
      index_.erase(it);
      throw;
    }
    detail::retain(&leaf);
    leaves_.push_back(&leaf);
  }
  return grads_[it->second];
}

void LeafGrads::apply() {
  for (std::size_t i = 0; i < leaves_.size(); ++i)
    if (grads_[i].defined()) accumulate_leaf(*leaves_[i], std::move(grads_[i]));
  clear();
}

void LeafGrads::clear() {
  grads_.clear();
  for (detail::LeafMeta* leaf : leaves_) detail::release(leaf);
  leaves_.clear();
  index_.clear();
}

void Tape::backward(const Tensor& root, const Tensor& seed) {
  UNROLL_CHECK(root.defined(), StateError, "backward: tensor is undefined; got an undefined tensor, expected a loss");
  UNROLL_CHECK(root.requires_grad(), StateError,
               "backward: tensor does not require grad; got a tensor of shape {} with no recorded history, expected "
               "the result of ops on tensors with requires_grad",
               root.shape());
  Tensor g = seed;
  if (!g.defined()) {
    UNROLL_CHECK(root.numel() == 1, StateError,
                 "backward: gradient can be implicitly created only for a scalar; got shape {}, expected one element "
                 "or a seed gradient of that shape",
                 root.shape());
    g = ones(root.shape(), root.dtype());
  }
  const Tensor roots[] = {root};
  const Tensor seeds[] = {std::move(g)};
  backward(roots, seeds);
}

void Tape::backward(std::span<const Tensor> roots, std::span<const Tensor> seeds) {
  const detail::DenormalScope denormals;  // every backward kernel on this thread, whatever loop it runs
  UNROLL_CHECK(roots.size() == seeds.size(), ValueError,
               "backward: one seed gradient per root; got {} roots and {} seeds", roots.size(), seeds.size());
  std::int64_t last = -1;  // the newest node a root came from
  for (std::size_t k = 0; k < roots.size(); ++k) {
    const Tensor &root = roots[k], &g = seeds[k];
    UNROLL_CHECK(root.defined() && root.requires_grad(), StateError,
                 "backward: root {} does not require grad; got {}, expected the result of ops on tensors with "
                 "requires_grad",
                 k, root.defined() ? fmt::format("a tensor of shape {}", root.shape()) : std::string("undefined"));
    UNROLL_CHECK(g.shape() == root.shape(), ShapeError,
                 "backward: seed gradient shape does not match the tensor; got {}, expected {}", g.shape(),
                 root.shape());
    UNROLL_CHECK(g.dtype() == root.dtype(), DtypeError,
                 "backward: seed gradient dtype does not match the tensor; got {}, expected {}", g.dtype(),
                 root.dtype());
    if (root.is_leaf()) continue;
    UNROLL_CHECK(root.tape_key() == key_, StateError,
                 "backward: the graph of this tensor has been freed; got a tensor recorded before the last backward() "
                 "or clear() (or on another tape), expected one recorded since (call detach() on state carried across "
                 "steps)");
    last = std::max<std::int64_t>(last, slots_[root.slot()].node);
  }
  for (std::size_t k = 0; k < roots.size(); ++k)  // d(root)/d(root): the seed itself
    if (roots[k].is_leaf()) give_leaf(leaf_grads_, *roots[k].leaf(), seeds[k]);
  if (last < 0) return;
  NoGradGuard no_grad;  // backward computes first-order gradients only
  if (grads_.size() < slots_.size()) grads_.resize(slots_.size());
  for (std::size_t k = 0; k < roots.size(); ++k)
    if (!roots[k].is_leaf()) accumulate_into(grads_[roots[k].slot()], seeds[k]);
  std::int64_t at = -1;  // the node running, for an error's "where" (anomaly detection)
  try {
    for (std::int64_t i = last; i >= 0; --i) {
      at = i;
      Node& n = nodes_[static_cast<std::size_t>(i)];
      bool reached = false;
      for (std::uint32_t s = n.out_begin; s < n.out_begin + n.out_count; ++s) reached |= grads_[s].defined();
      if (reached) {
        GradSink sink(*this, static_cast<std::uint32_t>(i));
        detail::OpScope op_scope(n.name);  // a gradient too large for memory names the op it belongs to
        n.run(n.closure, sink);
        if (detail::anomaly_checks()) [[unlikely]]
          check_input_grads(n);
      }
      release_node(n);  // frees what the node saved as soon as it is done: peak memory stays at the forward's
    }
    at = -1;
    deferred_.flush(leaf_grads_);
  } catch (...) {
    // Recorded inside a time loop while anomaly detection was on: say which step, as forward errors do.
    const std::shared_ptr<const std::string> where =
        at >= 0 && static_cast<std::size_t>(at) < where_.size() ? where_[static_cast<std::size_t>(at)] : nullptr;
    clear();
    if (where != nullptr) unroll::detail::rethrow_with_context(*where + ": ");
    throw;
  }
  clear_from(static_cast<std::size_t>(last) + 1);  // the walk released every node up to the newest root's
}

// ---- GradSink ----
namespace {
void check_not_stale(const char* name, std::size_t i, std::uint64_t key, std::uint64_t tape_key) {
  UNROLL_CHECK(key == tape_key, StateError,
               "backward: input {} of '{}' belongs to a graph that has been freed; got a tensor recorded before the "
               "last backward() (or on another tape), expected detach() on state carried across steps",
               i, name);
}
}  // namespace

void Tape::input_meta_error(const Node& n, std::size_t i) const {
  const InputRef& in = inputs_[n.in_begin + i];
  UNROLL_CHECK(in.needs, StateError, "backward: '{}' asked about input {}, which needs no gradient", n.name, i);
  check_not_stale(n.name, i, in.key, key_);
  throw StateError(fmt::format("backward: input {} of '{}' has no gradient record", i, n.name));  // unreachable
}

void Tape::note_where() {
  where_.resize(nodes_.size());
  where_.back() = detail::tls_anomaly_where != nullptr ? *detail::tls_anomaly_where : nullptr;
}

void Tape::check_input_grads(const Node& n) const {
  for (std::uint32_t k = 0; k < n.in_count; ++k) {
    const InputRef& in = inputs_[n.in_begin + k];
    if (!in.needs) continue;
    const Tensor* g = in.leaf == nullptr ? &grads_[in.slot]
                      : leaf_grads_      ? leaf_grads_->find(*in.leaf)
                                         : &in.leaf->grad;
    if (g != nullptr) detail::check_gradient(n.name, k, *g);
  }
}

void GradSink::add_rows_product(std::size_t i, const Tensor& p, const Tensor& q, std::int64_t q_offset) {
  const Tape::Node& n = tape_.nodes_[node_];
  const Tape::InputRef& in = tape_.inputs_[n.in_begin + i];
  if (!in.needs) return;
  if (detail::anomaly_checks()) [[unlikely]] {  // the product may be deferred: check its factors now
    detail::check_gradient(n.name, i, p, "rows product factor");
    detail::check_gradient(n.name, i, q, "rows product factor");
  }
  const auto [shape, dtype] = tape_.input_meta(n, i);
  UNROLL_CHECK(p.dim() >= 1 && q.dim() >= 1 && detail::rows_of(p) == detail::rows_of(q) && shape->dim() == 2 &&
                   p.shape().back() == (*shape)[0] && q_offset >= 0 && q.shape().back() + q_offset <= (*shape)[1],
               ShapeError,
               "backward: rows product for input {} of '{}' has the wrong shape; got p={} and q={} at column {}, "
               "expected p^T q within {}",
               i, n.name, p.shape(), q.shape(), q_offset, *shape);
  UNROLL_CHECK(p.dtype() == dtype && q.dtype() == dtype, DtypeError,
               "backward: rows product for input {} of '{}' has the wrong dtype; got {} and {}, expected {}", i, n.name,
               p.dtype(), q.dtype(), dtype);
  const bool block = q.shape().back() != (*shape)[1];
  const std::size_t bytes = static_cast<std::size_t>(p.numel() + detail::rows_of(q) * (*shape)[1]) * dtype_size(dtype);
  if (in.leaf && detail::DeferredRows::wanted(detail::rows_of(p), bytes)) {
    tape_.deferred_.add(*in.leaf, p, q, tape_.leaf_grads_, q_offset);
    return;
  }
  bool fresh = false;
  Tensor& dst = buffer(i, fresh, /*zero_fill=*/block);  // a column block: the other columns must read zero
  detail::rows_product(p, q, !fresh, dst, q_offset);
}

const Shape& GradSink::input_shape(std::size_t i) const { return *tape_.input_meta(tape_.nodes_[node_], i).first; }

void GradSink::add(std::size_t i, Tensor g) {
  const Tape::Node& n = tape_.nodes_[node_];
  const Tape::InputRef& in = tape_.inputs_[n.in_begin + i];
  if (!in.needs) return;
  const auto [shape, dtype] = tape_.input_meta(n, i);
  UNROLL_CHECK(g.shape() == *shape, ShapeError,
               "backward: gradient for input {} of '{}' has the wrong shape; got {}, expected {}", i, n.name, g.shape(),
               *shape);
  UNROLL_CHECK(g.dtype() == dtype, DtypeError,
               "backward: gradient for input {} of '{}' has the wrong dtype; got {}, expected {}", i, n.name, g.dtype(),
               dtype);
  if (in.leaf)
    give_leaf(tape_.leaf_grads_, *in.leaf, std::move(g));
  else
    accumulate_into(tape_.grads_[in.slot], std::move(g));
}

void GradSink::add_leaf(detail::LeafMeta& leaf, Tensor g) {
  const Tape::Node& n = tape_.nodes_[node_];
  UNROLL_CHECK(g.shape() == leaf.shape, ShapeError,
               "backward: gradient for a parameter reached by '{}' has the wrong shape; got {}, expected {}", n.name,
               g.shape(), leaf.shape);
  UNROLL_CHECK(g.dtype() == leaf.dtype, DtypeError,
               "backward: gradient for a parameter reached by '{}' has the wrong dtype; got {}, expected {}", n.name,
               g.dtype(), leaf.dtype);
  if (detail::anomaly_checks()) [[unlikely]]  // "input N" past the node's own inputs: a parameter it reached
    detail::check_gradient(n.name, n.in_count, g, "gradient of a parameter read inside (not an input)");
  give_leaf(tape_.leaf_grads_, leaf, std::move(g));
}

Tensor& GradSink::buffer(std::size_t i, bool& fresh, bool zero_fill) {
  const Tape::Node& n = tape_.nodes_[node_];
  const Tape::InputRef& in = tape_.inputs_[n.in_begin + i];
  const auto [shape, dtype] = tape_.input_meta(n, i);  // also checks needs and staleness
  Tensor& dst = in.leaf ? tape_.leaf_grad(*in.leaf) : tape_.grads_[in.slot];
  fresh = detail::make_writable(dst, *shape, dtype, zero_fill);
  return dst;
}

}  // namespace unroll::autograd
