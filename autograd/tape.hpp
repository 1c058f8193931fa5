#pragma once
// The tape: a flat, creation-ordered array of nodes, one active tape per thread. An op that produces a
// tensor needing gradients appends one node holding its backward closure (stored in the tape's arena, not
// on the heap) and the identities of its inputs. backward() walks the nodes newest first by index — no
// recursion, so a 10,000-step unroll is as safe as a 10-step one — and the engine, not the op, accumulates
// gradients and checks their shapes. Then the tape is cleared: its memory is reused by the next step.
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/tensor.hpp"
#include "anomaly.hpp"
#include "deferred_rows.hpp"

namespace unroll::autograd {

class Tape;
// The calling thread's recording state (read inline by every op).
extern constinit thread_local bool tls_grad_mode;
extern constinit thread_local Tape* tls_active_tape;  ///< null until the thread first needs a tape

/// False inside a NoGradGuard (and while backward runs): ops then record nothing.
inline bool grad_enabled() { return tls_grad_mode; }
/// Disables recording for its lifetime (like torch.no_grad()).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// Enables recording for its lifetime, also inside a NoGradGuard or a backward (like torch.enable_grad()):
/// a backward closure that recomputes a part of the graph (autograd::checkpoint) records it on a tape of its own.
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

/// Leaf gradients held aside instead of being written into the leaves' shared `.grad`: a tape that collects
/// into one (Tape::collect_leaf_grads) leaves every `.grad` untouched, so batch shards running backward on
/// several threads never write the same buffer (see autograd/shard.hpp). apply() adds them in afterwards.
class LeafGrads {
 public:
  LeafGrads() = default;
  ~LeafGrads() { clear(); }
  LeafGrads(const LeafGrads&) = delete;
  LeafGrads& operator=(const LeafGrads&) = delete;

  /// The held gradient of `leaf` (undefined until one arrives; the reference stays valid until clear()).
  /// Keeps the leaf's record alive.
  Tensor& slot(detail::LeafMeta& leaf);
  /// Number of leaves that received a gradient.
  std::size_t size() const { return leaves_.size(); }
  /// Accumulates each held gradient into its leaf's `.grad` exactly as backward() would have (in the order
  /// the leaves first received one), then empties this.
  void apply();
  /// Drops every held gradient.
  void clear();
  /// The held gradient of `leaf`, or null if none arrived (unlike slot(), adds nothing).
  const Tensor* find(const detail::LeafMeta& leaf) const {
    auto it = index_.find(&leaf);
    return it == index_.end() ? nullptr : &grads_[it->second];
  }
  /// Calls f(leaf, gradient) for each held gradient, in the order the leaves first received one.
  template <class F>
  void for_each(F&& f) {
    for (std::size_t i = 0; i < leaves_.size(); ++i)
      if (grads_[i].defined()) f(*leaves_[i], grads_[i]);
  }

 private:
  std::vector<detail::LeafMeta*> leaves_;  ///< retained
  std::deque<Tensor> grads_;  ///< a deque: references from slot() (GradSink::buffer) stay valid as it grows
  std::unordered_map<const detail::LeafMeta*, std::size_t> index_;
};

/// What a backward closure sees: the gradients of the node's outputs, and a sink for its inputs' gradients.
class GradSink {
 public:
  /// Gradient w.r.t. output k (zeros if none reached an output of a multi-output node).
  const Tensor& grad_output(std::size_t k = 0);
  /// Gradient w.r.t. output k, or null when none reached it (a multi-output node can then skip its part).
  const Tensor* grad_output_if(std::size_t k) const;
  /// Whether input i needs a gradient (skip the work when it does not).
  bool needs(std::size_t i) const;
  /// Accumulates g into input i's gradient. g must have input i's shape and dtype (checked).
  void add(std::size_t i, Tensor g);
  /// Accumulates g into the gradient of a leaf that is not one of the node's inputs, where this tape sends
  /// leaf gradients (its `.grad`, or the collecting LeafGrads): a node that recomputes its part of the graph
  /// (autograd::checkpoint) reaches the parameters used inside it this way. g must have the leaf's shape and dtype.
  void add_leaf(detail::LeafMeta& leaf, Tensor g);
  /// Input i's gradient buffer, to accumulate into in place (e.g. gemm with beta = 1). When `fresh` comes
  /// back true the buffer is new and uninitialised (write it, e.g. beta = 0); with zero_fill it is zeros.
  Tensor& buffer(std::size_t i, bool& fresh, bool zero_fill = false);
  /// Shape of input i (one that needs a gradient).
  const Shape& input_shape(std::size_t i) const;
  /// Adds p^T q to input i's gradient: p [M, a], q [M, b], input i [a, b] — a weight's gradient summed over
  /// M rows (linear's dW = dY^T X). p and q may have more dims: their leading dims are the rows. For a
  /// leaf with few rows the rows are copied aside and the product is done later together with that leaf's
  /// other deferred rows, in one large GEMM (autograd/deferred_rows.hpp). With q_offset, or q narrower than
  /// the input, q [M, k] gives columns [q_offset, q_offset + k) of the gradient (a product by a column block
  /// of a weight).
  void add_rows_product(std::size_t i, const Tensor& p, const Tensor& q, std::int64_t q_offset = 0);

 private:
  friend class Tape;
  GradSink(Tape& tape, std::uint32_t node) : tape_(tape), node_(node) {}
  Tape& tape_;
  std::uint32_t node_;
};

/// A tape scope: constructing one makes it the calling thread's active tape until it is destroyed.
/// Each thread also has a default tape, so most code never names one.
class Tape {
 public:
  Tape();
  ~Tape();
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  /// The calling thread's active tape.
  static Tape& current() {
    Tape* t = tls_active_tape;
    return t != nullptr ? *t : default_tape();
  }
  /// Number of recorded nodes.
  std::size_t size() const { return nodes_.size(); }
  /// Frees every node; tensors recorded so far become detached history (backward through them is a StateError).
  void clear();
  /// Identifies this tape since its last clear(); tensors recorded on it carry the same key.
  std::uint64_t key() const { return key_; }
  /// Backpropagates from `root` (seed: d(loss)/d(root)), then clears the tape.
  void backward(const Tensor& root, const Tensor& seed);
  /// Backpropagates from several roots at once, seeds[k] the gradient of roots[k] (each root's shape and
  /// dtype), then clears the tape.
  void backward(std::span<const Tensor> roots, std::span<const Tensor> seeds);
  /// From now on backward() accumulates leaf gradients into `into` instead of the leaves' `.grad`
  /// (null: back to `.grad`). `into` must outlive its use here.
  void collect_leaf_grads(LeafGrads* into) { leaf_grads_ = into; }
  /// The leaves (tensors that require grad, not op outputs) recorded ops have used since the last clear(),
  /// each once, in first-use order.
  std::span<detail::LeafMeta* const> leaves() const { return held_leaves_; }
  /// The name of the op that recorded `t` on this tape (since its last clear), or null.
  const char* producer_name(const Tensor& t) const {
    if (t.tape_key() != key_ || t.slot() >= slots_.size()) return nullptr;
    return nodes_[slots_[t.slot()].node].name;
  }

  /// Appends a node. Called by ops through record(); `fn` is invoked as fn(GradSink&) during backward.
  template <class F>
  void record(const char* name, std::span<Tensor* const> outputs, std::span<const Tensor* const> inputs, F&& fn);

 private:
  friend class GradSink;
  // Small on purpose (recorded for every op input): an input's shape and dtype are looked up in its
  // leaf record or its slot when a gradient arrives.
  struct InputRef {
    detail::LeafMeta* leaf;  ///< the leaf's gradient record (kept alive by held_leaves_), or null
    std::uint64_t key;       ///< tape key of a recorded input (0 for leaves and constants)
    std::uint32_t slot;
    bool needs;
  };
  struct SlotInfo {
    // Constructed in place, field by field: a braced temporary was assembled on the stack from narrow
    // stores and re-read wide, a store-forwarding stall on every recorded op.
    SlotInfo(const Shape& s, Dtype d, std::uint32_t n) : shape(s), dtype(d), node(n) {}
    Shape shape;
    Dtype dtype;
    std::uint32_t node;
  };
  struct Node {
    const char* name;
    void (*run)(void* closure, GradSink& sink);
    void (*destroy)(void* closure);
    void* closure;
    std::uint32_t in_begin, in_count, out_begin, out_count;
  };

  // Where a leaf's gradient goes: its `.grad`, or the collecting LeafGrads' slot for it.
  Tensor& leaf_grad(detail::LeafMeta& leaf) { return leaf_grads_ ? leaf_grads_->slot(leaf) : leaf.grad; }
  // Shape and dtype of an input that needs a gradient (checks that it is not from a freed graph).
  std::pair<const Shape*, Dtype> input_meta(const Node& n, std::size_t i) const {
    const InputRef& in = inputs_[n.in_begin + i];
    if (in.needs && in.leaf) return {&in.leaf->shape, in.leaf->dtype};
    if (in.needs && in.key == key_) return {&slots_[in.slot].shape, slots_[in.slot].dtype};
    input_meta_error(n, i);
  }
  [[noreturn]] void input_meta_error(const Node& n, std::size_t i) const;
  // Room for a closure in the arena. The fast path (room left in the current block) is inline: it runs
  // for every recorded op.
  void* arena_alloc(std::size_t bytes, std::size_t align) {
    const std::size_t start = (used_ + align - 1) & ~(align - 1);
    if (align <= kArenaAlign && block_ < blocks_.size() && start + bytes <= kBlockBytes) {
      used_ = start + bytes;
      return blocks_[block_].get() + start;
    }
    return arena_alloc_slow(bytes, align);
  }
  void* arena_alloc_slow(std::size_t bytes, std::size_t align);
  void reserve_for(std::size_t n_inputs, std::size_t n_outputs) {
    if (nodes_.size() == nodes_.capacity() || inputs_.size() + n_inputs > inputs_.capacity() ||
        slots_.size() + n_outputs > slots_.capacity() || held_leaves_.size() + n_inputs > held_leaves_.capacity())
      grow(n_inputs, n_outputs);
  }
  void grow(std::size_t n_inputs, std::size_t n_outputs);
  void release_node(Node& n);
  // Anomaly detection: NonFiniteError if a gradient of n's inputs holds a nan or an infinity after n ran.
  void check_input_grads(const Node& n) const;
  // Anomaly detection: keeps where the newest node was recorded (detail::AnomalyWhere) for backward's errors.
  void note_where();
  // Releases nodes [from, size()) and empties the tape (nodes below `from` are already released).
  void clear_from(std::size_t from);
  // The non-template rest of record() (capacity already reserved: cannot throw).
  void append_node(const char* name, void (*run)(void*, GradSink&), void (*destroy)(void*), void* closure,
                   std::span<const Tensor* const> inputs, std::span<Tensor* const> outputs) noexcept;

  std::vector<Node> nodes_;
  std::vector<InputRef> inputs_;
  std::vector<detail::LeafMeta*> held_leaves_;  ///< retained once each until clear(); see LeafMeta::tape_mark
  detail::DeferredRows deferred_;               ///< weight-gradient rows held for one large product per leaf
  std::vector<SlotInfo> slots_;
  std::vector<Tensor> grads_;  ///< one per slot, filled during backward
  /// Per node, where it was recorded (detail::AnomalyWhere), while anomaly detection is on; shorter than
  /// nodes_ (or empty) where it was off.
  std::vector<std::shared_ptr<const std::string>> where_;
  struct BlockDeleter {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t{kArenaAlign}); }
  };
  static constexpr std::size_t kArenaAlign = 64;
  static constexpr std::size_t kBlockBytes = 64 * 1024;
  std::vector<std::unique_ptr<std::byte[], BlockDeleter>> blocks_;  ///< closure arena; kept across clear()
  std::size_t block_ = 0, used_ = 0;
  std::uint64_t key_;
  LeafGrads* leaf_grads_ = nullptr;
  Tape* prev_ = nullptr;
  bool is_default_ = false;
  struct DefaultTag {};
  explicit Tape(DefaultTag);
  static Tape& default_tape();  // the thread's default tape, made active
};

/// True when an op on these inputs must be recorded: grad mode is on and some input requires grad.
inline bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->requires_grad()) return true;
  return false;
}
inline bool needs_grad(std::span<const Tensor> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.requires_grad()) return true;
  return false;
}

/// Records a one-output op on the active tape: `out` becomes a node output; `fn(GradSink&)` is its backward.
/// Capture by value only what backward needs (BPTT memory is these captures).
template <class F>
void record(const char* name, Tensor& out, std::initializer_list<const Tensor*> inputs, F&& fn) {
  Tensor* outs[] = {&out};
  Tape::current().record(name, std::span<Tensor* const>(outs),
                         std::span<const Tensor* const>(inputs.begin(), inputs.size()), std::forward<F>(fn));
}
/// Records an op with several outputs and/or a run-time list of inputs.
template <class F>
void record(const char* name, std::span<Tensor* const> outputs, std::span<const Tensor* const> inputs, F&& fn) {
  Tape::current().record(name, outputs, inputs, std::forward<F>(fn));
}

// ---- inline implementation (these run for every node of every backward) ----
inline bool GradSink::needs(std::size_t i) const { return tape_.inputs_[tape_.nodes_[node_].in_begin + i].needs; }
inline const Tensor& GradSink::grad_output(std::size_t k) {
  const std::uint32_t s = tape_.nodes_[node_].out_begin + static_cast<std::uint32_t>(k);
  Tensor& g = tape_.grads_[s];
  if (!g.defined()) g = zeros(tape_.slots_[s].shape, tape_.slots_[s].dtype);
  return g;
}

inline const Tensor* GradSink::grad_output_if(std::size_t k) const {
  const Tensor& g = tape_.grads_[tape_.nodes_[node_].out_begin + static_cast<std::uint32_t>(k)];
  return g.defined() ? &g : nullptr;
}

// ---- template implementation ----
template <class F>
void Tape::record(const char* name, std::span<Tensor* const> outputs, std::span<const Tensor* const> inputs, F&& fn) {
  using Fn = std::decay_t<F>;
  if (detail::anomaly_checks()) [[unlikely]]
    detail::check_outputs(name, outputs);
  reserve_for(inputs.size(), outputs.size());  // after this nothing below can throw but the closure's copy
  void* mem = arena_alloc(sizeof(Fn), alignof(Fn));
  Fn* closure = new (mem) Fn(std::forward<F>(fn));
  append_node(
      name, [](void* c, GradSink& sink) { (*static_cast<Fn*>(c))(sink); },
      std::is_trivially_destructible_v<Fn> ? nullptr : +[](void* c) { static_cast<Fn*>(c)->~Fn(); }, closure, inputs,
      outputs);
  if (detail::anomaly_checks()) [[unlikely]]
    note_where();
}

}  // namespace unroll::autograd

namespace unroll {
using autograd::NoGradGuard;  // as torch::NoGradGuard
}  // namespace unroll
